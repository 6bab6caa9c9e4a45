"""How a kernel benchmark reports: extra_info, pytest-benchmark stats, one printed line."""
from __future__ import annotations

import torch

from bench.timing import Samples

# A benchmark of a wrong kernel is worthless: every test checks first.
MAX_REL_ERROR = 2e-2


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """‖out − ref‖ / ‖ref‖ in float64 (NaN anywhere gives NaN, which fails every bound)."""
    out64, ref64 = out.double(), ref.double()
    return float((out64 - ref64).norm() / ref64.norm().clamp_min(1e-30))


def check_close(name: str, out: torch.Tensor, ref: torch.Tensor, bound: float = MAX_REL_ERROR) -> float:
    """Raise AssertionError unless `out` matches `ref` to `bound` relative error."""
    err = rel_error(out, ref)
    if not err <= bound:
        raise AssertionError(f"{name}: relative error {err:.3g} > {bound:g}; not timing a wrong result")
    return err


def record(benchmark, samples: Samples, info: dict[str, object]) -> None:
    """Put CUDA-event samples into pytest-benchmark: figures and raw samples in
    extra_info (what bench/report.py and ci/bench_gate.py read) and the same samples
    as the benchmark's own stats, so its table and --benchmark-save-data show them."""
    benchmark.extra_info.update(info)
    benchmark.extra_info.update(samples.summary())
    if getattr(benchmark, "disabled", False):
        return
    make_stats = getattr(benchmark, "_make_stats", None)
    if make_stats is None:  # a pytest-benchmark without that hook: stats stay host-timed
        benchmark.pedantic(lambda: None, rounds=1)
        return
    stats = make_stats(1)
    for s in samples.seconds:
        stats.update(s)
    benchmark._mode = "cuda-events"


def ratio(ours: Samples, peer: Samples | None) -> float | None:
    """Speed-up of ours over a peer (peer median / our median); None without a peer."""
    return None if peer is None else peer.median / ours.median


def fmt_ratio(value: float | None, name: str) -> str:
    return f"{name} n/a" if value is None else f"{value:.2f}x {name}"
