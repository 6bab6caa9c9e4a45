"""The engine's throughput against its peer per batch size (matplotlib PNG).

From the engine benchmark's records (bench/bench_engine_*.py): per batch size our
tokens/s, the peer's (HF `generate`, same prompts, same run) and, where recorded,
the step's limit measured on the machine; each of our points labelled with its
ratio to the peer. One panel per model and dtype.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REQUIRED = ("batch", "ours_tokens_per_s", "hf_tokens_per_s")


@dataclass(frozen=True)
class EnginePoint:
    batch: int
    ours: float                  # tokens/s
    peer: float                  # tokens/s
    limit: float | None          # tokens/s the machine allows at this batch (None: not recorded)
    same_tokens: bool | None     # greedy tokens equal to the peer's


def is_engine_record(info: dict) -> bool:
    return all(isinstance(info.get(k), (int, float)) and not isinstance(info.get(k), bool) for k in REQUIRED)


def engine_point(info: dict) -> EnginePoint:
    """One record's point; ValueError names a record that is not an engine throughput one."""
    if not is_engine_record(info):
        missing = [k for k in REQUIRED if not isinstance(info.get(k), (int, float))]
        raise ValueError(f"engine throughput: a record without {', '.join(missing)}")
    limit = info.get("limit_tokens_per_s")
    return EnginePoint(int(info["batch"]), float(info["ours_tokens_per_s"]), float(info["hf_tokens_per_s"]),
                       float(limit) if isinstance(limit, (int, float)) else None,
                       info.get("greedy_tokens_equal_hf"))


def panels(records: list[dict]) -> dict[str, list[EnginePoint]]:
    """Points by 'model dtype', each sorted by batch; ValueError for two records of one batch."""
    out: dict[str, list[EnginePoint]] = {}
    for r in records:
        info = r.get("extra_info") or {}
        workload = info.get("workload") or {}
        key = " ".join(str(workload[k]) for k in ("model", "dtype") if workload.get(k)) or "engine"
        out.setdefault(key, []).append(engine_point(info))
    for key, points in out.items():
        batches = [p.batch for p in points]
        if len(set(batches)) != len(batches):
            raise ValueError(f"engine throughput: {key} has two records of one batch size ({sorted(batches)})")
        points.sort(key=lambda p: p.batch)
    return out


def engine_throughput(records: list[dict], path: Path, title: str) -> Path:
    """The PNG of engine records (pytest-benchmark 'benchmarks' entries)."""
    from bench.harness.plots import _pyplot
    plt = _pyplot()
    from matplotlib import ticker
    groups = panels(records)
    if not groups:
        raise ValueError(f"engine throughput: no engine records to plot for {title}")
    fig, axes = plt.subplots(1, len(groups), figsize=(6.5 * len(groups), 4.6), squeeze=False)
    for ax, (key, points) in zip(axes[0], groups.items()):
        xs = [p.batch for p in points]
        ax.plot(xs, [p.ours for p in points], "o-", color="#2e86c1", lw=1.8, label="pagedlm")
        ax.plot(xs, [p.peer for p in points], "s--", color="#7f8c8d", lw=1.4, label="HF generate (peer)")
        limited = [p for p in points if p.limit is not None]
        if limited:
            ax.plot([p.batch for p in limited], [p.limit for p in limited], "_:", color="k", ms=14, lw=1,
                    label="limit measured here (weights read, matmul rate)")
        for p in points:
            mark = " (tokens differ from the peer's)" if p.same_tokens is False else ""
            ax.annotate(f"{p.ours / p.peer:.2f}x: {p.ours:.1f} vs {p.peer:.1f}{mark}", (p.batch, p.ours),
                        textcoords="offset points", xytext=(8, 6 if p.ours >= p.peer else -14), fontsize=8,
                        color="#2e86c1")
        values = [v for p in points for v in (p.ours, p.peer, p.limit) if v is not None]
        ax.set_ylim(min(values) / 1.5, max(values) * 1.5)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(xs, [str(b) for b in xs])
        ax.set_xlim(xs[0] / 1.6, xs[-1] * 3.2)          # room for the last point's label
        ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_locator(ticker.NullLocator())
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        ax.set(xlabel="batch size (requests at once)", ylabel="output tokens / s", title=key)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
