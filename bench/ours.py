"""Our kernels as no-argument calls for the timer.

Each launcher validates its arguments, and the index checks read device memory
on the host (a sync). A synced call cannot be captured in a CUDA graph and puts
host time between the timing events, so once a call has run with every check
on (the correctness check), the timed call takes the launcher's documented way
around the sync: `check_indices=False` and `max_context_len` (decode),
`check_indices=False` (write_kv), a precomputed `plan` (prefill).

A launcher without that way is not timed some other way: `MissingFeature` is
raised, and bench/conftest.py turns it into a skip that names what is missing
(a benchmark never silently measures something else).
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch

import kernels
from bench.problems import DecodeProblem, PrefillProblem, WriteProblem


class MissingFeature(RuntimeError):
    """The launcher lacks what the timed call needs; the benchmark is skipped with this reason."""


def require(fn: Callable, *names: str) -> None:
    """MissingFeature unless `fn` takes every keyword in `names`."""
    params = inspect.signature(fn).parameters
    missing = [n for n in names if n not in params]
    if missing:
        raise MissingFeature(f"{fn.__module__}.{fn.__name__} takes no {', '.join(missing)}: the timed call "
                             "would include host-side checks, so it is not timed")


def decode_call(p: DecodeProblem, out: torch.Tensor, checked: bool = False) -> Callable[[], torch.Tensor]:
    extra: dict[str, object] = {}
    if not checked:
        require(kernels.paged_decode, "check_indices", "max_context_len")
        extra = {"check_indices": False, "max_context_len": p.context}  # known on the host: no sync

    def run() -> torch.Tensor:
        return kernels.paged_decode(p.query, p.kv_cache, p.block_tables, p.context_lens, p.scale,
                                    kv_scales=p.kv_scales, out=out, **extra)
    return run


def _prefill_plan(p: PrefillProblem, kernel: str | None = None) -> object:
    """The launcher's host-checked plan for this batch (validated once, outside the timing);
    `kernel` ("triton" / "sm90") picks one of paged_prefill's kernels, None its own choice."""
    require(kernels.paged_prefill, "plan")
    try:
        from kernels.prefill_plan import plan_prefill
    except ImportError as exc:
        raise MissingFeature(f"kernels.prefill_plan.plan_prefill is missing ({exc})") from exc
    num_blocks, _, block_size, _, head_dim = p.kv_cache.shape
    extra = {} if kernel is None else {"kernel": kernel}
    try:
        return plan_prefill(p.query_start_loc, p.context_lens, p.block_tables, p.query.shape[0],
                            num_blocks, block_size, head_dim, p.query.dtype, True, **extra)
    except ValueError as exc:
        if kernel is not None and "unknown prefill tuning option" in str(exc):   # a tree with one kernel
            raise MissingFeature(f"paged_prefill has no kernel choice ({exc})") from exc
        raise


def prefill_kernel(p: PrefillProblem) -> str:
    """Which kernel paged_prefill runs for this problem by default ("triton" on trees without a choice)."""
    try:
        from kernels.prefill_route import use_sm90
    except ImportError:
        return "triton"
    plan = _prefill_plan(p)
    quantized = p.kv_cache.element_size() == 1
    return "sm90" if use_sm90(plan.config.kernel, p.query, p.kv_cache, quantized, plan.config.block_m, False) \
        else "triton"


def prefill_call(p: PrefillProblem, out: torch.Tensor, checked: bool = False,
                 kernel: str | None = None) -> Callable[[], torch.Tensor]:
    extra = ({} if kernel is None else {"kernel": kernel}) if checked else {"plan": _prefill_plan(p, kernel)}

    def run() -> torch.Tensor:
        return kernels.paged_prefill(p.query, p.kv_cache, p.block_tables, p.query_start_loc,
                                     p.context_lens, p.scale, out=out, **extra)
    return run


def write_call(p: WriteProblem, checked: bool = False) -> Callable[[], None]:
    extra: dict[str, object] = {}
    if not checked:
        require(kernels.write_kv, "check_indices")
        extra = {"check_indices": False}

    def run() -> None:
        kernels.write_kv(p.key, p.value, p.kv_cache, p.slot_mapping, kv_scales=p.kv_scales, **extra)
    return run
