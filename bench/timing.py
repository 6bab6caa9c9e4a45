"""GPU timing with CUDA events: warm-up, then timed runs each preceded by an L2 flush.

The flush (a 256 MiB read) runs outside the timed region, between the start
event of one run and the end event of the previous, so no run finds its inputs
in the 50 MB L2. It also gives the CPU a runway: while the GPU reads the flush
buffer the host enqueues the next launch, so launch latency stays out of the
figure unless the function synchronises with the device.

The flush reads rather than writes (the usual `cache.zero_()`): a write leaves
the L2 full of dirty lines, and their write-back to DRAM then lands inside the
next timed run. Measured on the H100 (2026-11-28): a decode step reading 134 MB
took 64.6 us after a 256 MiB write, 55.5 us after a write followed by a read,
55.3 us with no flush at all - a constant ~9 us that has nothing to do with the
kernel (`python3 -m bench.l2_flush_check`; the run: results/h100/l2_flush_check.txt).
`L2Flush(mode="write")` keeps the old behaviour for comparison.

A function that synchronises (a launcher validating its arguments, say) would
have host time inside its events; `time_gpu` therefore first tries to capture it
in a CUDA graph and times graph replays, and falls back to eager calls, saying
which in `Samples.mode`.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable

import torch

FLUSH_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Samples:
    """Raw timings of one function, in seconds, and how they were taken."""
    seconds: tuple[float, ...]
    mode: str  # "cuda-graph" or "eager"

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def iqr(self) -> float:
        if len(self.seconds) < 2:
            return 0.0
        q1, _, q3 = statistics.quantiles(self.seconds, n=4)
        return q3 - q1

    def summary(self, prefix: str = "") -> dict[str, object]:
        """Figures for benchmark.extra_info; the raw samples go along for the gate."""
        return {f"{prefix}median_s": self.median, f"{prefix}iqr_s": self.iqr,
                f"{prefix}rounds": len(self.seconds), f"{prefix}timing": self.mode,
                f"{prefix}samples_s": list(self.seconds)}


class L2Flush:
    """Owns the buffer whose reading (mode "read", clean lines) or writing (mode
    "write", dirty lines) evicts the L2 between timed runs."""

    def __init__(self, device: torch.device | str = "cuda", nbytes: int = FLUSH_BYTES, mode: str = "read") -> None:
        if mode not in ("read", "write"):
            raise ValueError(f"mode must be 'read' or 'write', got {mode!r}")
        self.mode = mode
        self.buffer = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
        self.sink = torch.empty((), dtype=torch.float32, device=device)

    def describe(self) -> str:
        """What runs between timed runs, for the benchmark JSON."""
        return f"{self.mode} {self.buffer.numel() * 4 // 2**20} MiB"

    def __call__(self) -> None:
        if self.mode == "read":
            torch.sum(self.buffer, dim=0, out=self.sink)
        else:
            self.buffer.fill_(1.0)


def _capture(fn: Callable[[], object]) -> Callable[[], None] | None:
    """A replay function for `fn` captured in a CUDA graph, or None when it cannot be captured."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # capture wants the allocator warmed on a side stream
        fn()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            fn()
    except Exception:  # a sync or a host read inside fn: not capturable
        torch.cuda.synchronize()
        return None
    return graph.replay


def _event_times(run: Callable[[], object], reps: int, flush: Callable[[], None] | None) -> list[float]:
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    torch.cuda.synchronize()
    for start, end in zip(starts, ends):
        if flush is not None:
            flush()
        start.record()
        run()
        end.record()
    torch.cuda.synchronize()
    # CUDA events resolve about half a microsecond: nanoseconds keep the JSON short.
    return [round(s.elapsed_time(e) / 1e3, 9) for s, e in zip(starts, ends)]


def time_gpu(fn: Callable[[], object], flush: Callable[[], None] | None = None, *,
             warmup: int = 3, reps: int | None = None, target_s: float = 0.2,
             min_reps: int = 10, max_reps: int = 200, use_graph: bool = True) -> Samples:
    """Time `fn` on the current CUDA device. Without `reps`, as many runs as fit
    `target_s` of device time, clamped to [min_reps, max_reps]."""
    if warmup < 1:
        raise ValueError(f"warmup must be >= 1 (compilation and autotuning stay out of the samples), got {warmup}")
    for _ in range(warmup):
        fn()
    run: Callable[[], object] = fn
    mode = "eager"
    if use_graph:
        replay = _capture(fn)
        if replay is not None:
            run, mode = replay, "cuda-graph"
            run()
    if reps is None:
        estimate = statistics.median(_event_times(run, 3, flush))
        reps = int(min(max_reps, max(min_reps, target_s / max(estimate, 1e-7))))
    if reps < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    return Samples(tuple(_event_times(run, reps, flush)), mode)
