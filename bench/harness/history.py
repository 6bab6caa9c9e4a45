"""`pagedlm bench history`: the headline figures across committed results.

Every pytest-benchmark file under bench/results/<device>/ (recursively; other JSON
there, such as the sweeps, is left out and counted) is one point, named by the
commit it measured (commit_info, or the SOURCE_COMMIT line of a machine.txt beside
it, which bench/report.py also reads) and ordered by that commit's time. The
figure per benchmark is its median time; the table has a column per commit and the
PNG a line per benchmark, relative to its first point (asv-style). With the PNG
come the suites' figures (the roofline, the engine against its peer) of each
device's newest commit.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness.results import MANIFEST, HarnessInputError

COMMIT_LINE = re.compile(r"^commit ([0-9a-f]{7,40}) \(from SOURCE_COMMIT\)", re.M)


@dataclass
class Point:
    commit: str
    time: str
    files: list[str] = field(default_factory=list)
    medians: dict[str, float] = field(default_factory=dict)   # {benchmark: seconds}
    records: dict[str, dict] = field(default_factory=dict)    # {benchmark: its entry, one round's}
    machine_info: dict = field(default_factory=dict)

    def figures(self, folder: Path, device: str) -> list[Path]:
        """This commit's suite figures (bench/harness/figures.py), named after the device."""
        from bench.harness.figures import suite_figures
        return suite_figures(list(self.records.values()), folder, self.machine_info,
                             label=f"{device} {self.commit}: ", prefix=f"{device}_")


def _commit_of(path: Path, doc: dict, top: Path) -> tuple[str, str]:
    folders = [path.parent, *[p for p in path.parent.parents if p.is_relative_to(top)]]
    for folder in folders:
        machine = folder / "machine.txt"
        if machine.is_file():
            match = COMMIT_LINE.search(machine.read_text(errors="replace"))
            if match:
                return match.group(1)[:10], doc.get("datetime", "")  # commit_info names another tree
            break
    info = doc.get("commit_info") or {}
    commit = (info.get("id") or "unknown")[:10] + ("+dirty" if info.get("dirty") else "")
    return commit, info.get("time") or doc.get("datetime", "")


def _median(bench: dict) -> float | None:
    extra, stats = bench.get("extra_info") or {}, bench.get("stats") or {}
    value = extra.get("median_s") or stats.get("median")
    return float(value) if value else None


def collect(device_dir: Path) -> tuple[list[Point], int]:
    """The points of one device folder, oldest commit first; and how many files were skipped."""
    points: dict[str, Point] = {}
    skipped = 0
    for path in sorted(p for p in device_dir.rglob("*.json") if p.name != MANIFEST):  # what `bench run` ran
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            skipped += 1
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list) or "machine_info" not in doc:
            skipped += 1
            continue
        commit, when = _commit_of(path, doc, device_dir)
        point = points.setdefault(commit, Point(commit, when, machine_info=doc["machine_info"] or {}))
        point.files.append(str(path.relative_to(device_dir)))
        for bench in doc["benchmarks"]:
            median = _median(bench)
            name = bench.get("fullname") or bench.get("name")
            if name:
                point.records[name] = {"fullname": name, "extra_info": bench.get("extra_info") or {}}
            if median is not None and name:
                # several rounds of one commit: keep the median of their medians
                point.medians.setdefault(name, []).append(median)  # type: ignore[arg-type]
    for point in points.values():
        point.medians = {k: sorted(v)[len(v) // 2] for k, v in point.medians.items()}  # type: ignore[arg-type]
    return sorted(points.values(), key=lambda p: p.time), skipped


def devices(results: Path, device: str | None) -> dict[str, Path]:
    if not results.is_dir():
        raise HarnessInputError(f"--results {results}: no such folder")
    found = {p.name: p for p in sorted(results.iterdir()) if p.is_dir()}
    if device is not None:
        if device not in found:
            raise HarnessInputError(f"--device {device!r}: no folder {results / device} (have: {', '.join(found)})")
        return {device: found[device]}
    return found


def table(device: str, points: list[Point], skipped: int) -> str:
    from bench.harness.markdown import fmt_time
    names = sorted({n for p in points for n in p.medians})
    lines = [f"### {device}", "",
             f"{len(points)} commit(s), {sum(len(p.files) for p in points)} result file(s)"
             + (f"; {skipped} other JSON file(s) left out (not pytest-benchmark)" if skipped else "") + ".", ""]
    if not points:
        return "\n".join(lines + ["_no pytest-benchmark results_", ""])
    lines += ["| benchmark | " + " | ".join(f"{p.commit} ({p.time[:10]})" for p in points) + " |",
              "|---|" + "---|" * len(points)]
    for name in names:
        cells = [fmt_time(p.medians.get(name)) for p in points]
        lines.append(f"| `{name.split('::', 1)[-1]}` | " + " | ".join(cells) + " |")
    return "\n".join(lines + [""])


def trend(by_device: dict[str, list[Point]], path: Path) -> Path:
    """One panel per device: each benchmark's median relative to its first point, per commit."""
    from bench.harness.plots import _pyplot
    plt = _pyplot()
    shown = {d: pts for d, pts in by_device.items() if pts}
    if not shown:
        raise HarnessInputError("history: no pytest-benchmark results to plot")
    fig, axes = plt.subplots(len(shown), 1, figsize=(9, 3.8 * len(shown)), squeeze=False)
    for ax, (device, points) in zip(axes[:, 0], shown.items()):
        names = sorted({n for p in points for n in p.medians})
        for name in names:
            xs = [i for i, p in enumerate(points) if name in p.medians]
            first = points[xs[0]].medians[name]
            ax.plot(xs, [points[i].medians[name] / first for i in xs], marker="o", lw=1, ms=4,
                    label=name.split("::", 1)[-1][:48])
        ax.set_xticks(range(len(points)), [f"{p.commit}\n{p.time[:10]}" for p in points], fontsize=7)
        ax.set(ylabel="median time / first point", title=f"{device}: {len(names)} benchmarks over "
               f"{len(points)} commit(s)")
        ax.axhline(1.0, color="#999999", lw=0.8)
        if len(names) <= 16:
            ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.set_xlim(-0.5, max(len(points) - 0.5, 0.5))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
