"""Read pytest-benchmark JSON into runs the comparison can judge.

A run is one side of a comparison: a JSON file, or a folder of them (searched
recursively; `manifest.json`, what `pagedlm bench run` writes beside them, is not
a result). Each file is one round: the gate writes one file per round and side,
and the statistics use the rounds (a bootstrap over rounds, the A/A noise floor).

Raw samples come from `extra_info["samples_s"]` (the kernel benchmarks' CUDA-event
times) or `stats["data"]`, which pytest-benchmark writes only with
`--benchmark-save-data`; a benchmark with neither cannot be judged.

A benchmark may also record figures of each timed run, seconds where lower is better,
in `extra_info["per_run_s"]` ({figure: [one value per run]}: a serving run's p50 and
p99 TTFT, say). Each becomes a benchmark of its own, `<name>::<figure>`, with the
runs as its samples, so percentiles are gated over repeated runs by the same test
as times, never on one run's p99.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

MANIFEST = "manifest.json"


class HarnessInputError(ValueError):
    """Input the harness cannot judge; the CLI prints it as one line and exits 2."""


@dataclass
class Series:
    """One benchmark's samples on one side: a tuple of seconds per round."""

    name: str
    rounds: list[tuple[float, ...]] = field(default_factory=list)
    fingerprint: dict | None = None
    extra_info: dict = field(default_factory=dict)

    @property
    def samples(self) -> list[float]:
        return [s for r in self.rounds for s in r]


@dataclass
class Run:
    """One side: where it came from, the machine it ran on, its benchmarks by full name.
    `machine` is what must match across sides; `machine_info` all its first file recorded
    (the measured ceilings, the GPU's datasheet figures) for the reports."""

    source: Path
    machine: dict[str, str | int | None]
    benchmarks: dict[str, Series]
    commits: list[str] = field(default_factory=list)
    machine_info: dict = field(default_factory=dict)


def machine_identity(machine_info: dict) -> dict[str, str | int | None]:
    """What must match for two runs to be comparable: CPU model and cores, GPU model."""
    cpu = machine_info.get("cpu") or {}
    gpu = machine_info.get("gpu") or {}
    return {
        "cpu": machine_info.get("cpu_model") or cpu.get("brand_raw") or machine_info.get("processor") or None,
        "cores": machine_info.get("cpu_cores") or cpu.get("count"),
        "gpu": gpu.get("name") if isinstance(gpu, dict) else None,
    }


def samples_of(bench: dict, where: Path) -> tuple[float, ...]:
    raw = (bench.get("extra_info") or {}).get("samples_s") or (bench.get("stats") or {}).get("data")
    name = bench.get("fullname") or bench.get("name")
    if not raw:
        raise HarnessInputError(f"{where}: benchmark {name!r} has no raw samples (run pytest with "
                                "--benchmark-save-data, or record extra_info['samples_s'])")
    try:
        return tuple(float(x) for x in raw)
    except (TypeError, ValueError) as exc:
        raise HarnessInputError(f"{where}: benchmark {name!r} has non-numeric samples ({exc})") from exc


def _read(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise HarnessInputError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HarnessInputError(f"{path}: not pytest-benchmark JSON (not JSON at all: {exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list) or "machine_info" not in doc:
        raise HarnessInputError(f"{path}: not pytest-benchmark JSON (no 'benchmarks' list and 'machine_info')")
    return doc


def files_of(path: Path) -> list[Path]:
    if not path.exists():
        raise HarnessInputError(f"{path}: no such file or folder")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*.json") if p.name != MANIFEST)
    if not files:
        raise HarnessInputError(f"{path}: a folder without pytest-benchmark JSON files")
    return files


def _add_round(series: Series, bench: dict, where: Path) -> None:
    extra = bench.get("extra_info") or {}
    fingerprint = extra.get("fingerprint")
    if series.rounds and fingerprint != series.fingerprint:
        raise HarnessInputError(f"{where}: benchmark {series.name!r} ran a different workload than in the "
                                f"other rounds of the same side ({describe_difference(series.fingerprint, fingerprint)})")
    series.fingerprint = fingerprint
    series.extra_info = {k: v for k, v in extra.items() if k != "samples_s"}
    series.rounds.append(samples_of(bench, where))


def load_run(path: Path) -> Run:
    """Every benchmark of every round under `path`; HarnessInputError for anything unjudgeable."""
    path = Path(path)
    machine: dict | None = None
    info: dict = {}
    benchmarks: dict[str, Series] = {}
    commits: list[str] = []
    for f in files_of(path):
        doc = _read(f)
        ident = machine_identity(doc.get("machine_info") or {})
        if machine is not None and ident != machine:
            raise HarnessInputError(f"{f}: ran on another machine than the other files of {path} "
                                    f"({describe_difference(machine, ident)})")
        if machine is None:
            info = doc.get("machine_info") or {}
        machine = ident
        commit = (doc.get("commit_info") or {}).get("id")
        if commit and commit not in commits:
            commits.append(commit)
        for bench in doc["benchmarks"]:
            name = bench.get("fullname") or bench.get("name")
            if not name:
                raise HarnessInputError(f"{f}: a benchmark without a name")
            _add_round(benchmarks.setdefault(name, Series(name)), bench, f)
            for figure in per_run_figures(bench, name, f):
                _add_round(benchmarks.setdefault(figure["fullname"], Series(figure["fullname"])), figure, f)
    assert machine is not None  # files_of returned at least one file
    return Run(path, machine, benchmarks, commits, info)


def per_run_figures(bench: dict, name: str, where: Path) -> list[dict]:
    """The benchmark entries (name, fingerprint, samples) of a benchmark's per_run_s figures."""
    extra = bench.get("extra_info") or {}
    figures = extra.get("per_run_s")
    if figures is None:
        return []
    if not isinstance(figures, dict) or not all(isinstance(v, list) for v in figures.values()):
        raise HarnessInputError(f"{where}: benchmark {name!r}: extra_info['per_run_s'] must map each figure "
                                "to a list of per-run values")
    return [{"fullname": f"{name}::{key}",
             "extra_info": {"fingerprint": extra.get("fingerprint"), "samples_s": values}}
            for key, values in sorted(figures.items())]


def describe_difference(a: dict | None, b: dict | None) -> str:
    """'key: A -> B' for every key whose value differs (None: not recorded)."""
    if a is None or b is None:
        return "fingerprint recorded on one side only"
    keys = sorted(set(a) | set(b))
    return ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys if a.get(k) != b.get(k))
