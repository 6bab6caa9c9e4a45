"""Launches stubbed below Triton's launcher object, for `python3 -m bench.profile_launch --cpu`.

No GPU: a call runs on CPU tensors and takes the compiled-launch path a CUDA call
takes, up to a launcher that does nothing, so what is timed is the host work
before the launch (checks, config, specialisation key, cache lookups, the
launcher call itself with a no-op body). The stubs, undone on exit:
- the "needs a CUDA device" check passes CPU tensors;
- the SM count is an H200's (132), so the config (splits, fused merge) is the GPU's;
- the current CUDA device and stream are 0;
- `kernels.launch.compiled` hands out a launcher that does nothing.
TRITON_INTERPRET must be unset (the kernels must be JIT functions, as on a GPU).
"""
from __future__ import annotations

import contextlib
import functools
import statistics
import sys
import time
from typing import Callable, Iterator
from unittest import mock

H200_SMS = 132
ROUNDS = 7


def _noop_launcher(*args: object) -> None:
    return None


@contextlib.contextmanager
def launcher_stubbed() -> Iterator[None]:
    """CPU tensors take the compiled-launch path as CUDA tensors would, up to a no-op launcher."""
    from kernels import launch as launch_mod
    from kernels import validation

    @functools.lru_cache(maxsize=1024)             # the real `compiled` is a cache of the same key
    def fake_compiled(kernel, device, key, consts, options):
        return launch_mod.Compiled(None, _noop_launcher, 0, None)

    paged_decode_mod = sys.modules["kernels.paged_decode"]
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(validation, "check_device_runs_triton", lambda *a: None))
        stack.enter_context(mock.patch.object(paged_decode_mod, "sm_count", lambda device: H200_SMS))
        stack.enter_context(mock.patch.object(launch_mod, "_current_device", lambda: 0))
        stack.enter_context(mock.patch.object(launch_mod, "_current_stream", lambda device: 0))
        stack.enter_context(mock.patch.object(launch_mod, "compiled", fake_compiled))
        yield


def per_call_us(fn: Callable[[], object], calls: int, rounds: int = ROUNDS) -> float:
    """Median host microseconds per call over `rounds` rounds of `calls` calls."""
    for _ in range(100):
        fn()
    figures = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        figures.append((time.perf_counter_ns() - start) / calls / 1e3)
    return statistics.median(figures)
