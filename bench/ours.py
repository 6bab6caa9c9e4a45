"""Our kernels as no-argument calls for the timer.

Each launcher validates its arguments, and the index checks read device memory
on the host (a sync). A synced call cannot be captured in a CUDA graph and puts
host time between the timing events, so once a call has run with every check
on (the correctness check), the timed call takes the launcher's documented way
around the sync where it offers one: `check_indices=False` (write_kv, decode) or
a precomputed `plan` (prefill). Where a launcher offers none, time_gpu falls back
to eager timing and the JSON says so (`timing: eager`).
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch

import kernels
from bench.problems import DecodeProblem, PrefillProblem, WriteProblem


def _accepts(fn: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _unchecked(fn: Callable) -> dict[str, object]:
    return {"check_indices": False} if _accepts(fn, "check_indices") else {}


def decode_call(p: DecodeProblem, out: torch.Tensor, checked: bool = False) -> Callable[[], torch.Tensor]:
    extra = {} if checked else _unchecked(kernels.paged_decode)
    if not checked and _accepts(kernels.paged_decode, "max_context_len"):
        extra["max_context_len"] = p.context  # known on the host: spares the launcher a sync

    def run() -> torch.Tensor:
        return kernels.paged_decode(p.query, p.kv_cache, p.block_tables, p.context_lens, p.scale,
                                    kv_scales=p.kv_scales, out=out, **extra)
    return run


def _prefill_plan(p: PrefillProblem) -> object | None:
    """The launcher's host-checked plan for this batch, when the kernels offer one."""
    if not _accepts(kernels.paged_prefill, "plan"):
        return None
    try:
        from kernels.prefill_plan import plan_prefill
        num_blocks, _, block_size, _, head_dim = p.kv_cache.shape
        return plan_prefill(p.query_start_loc, p.context_lens, p.block_tables, p.query.shape[0],
                            num_blocks, block_size, head_dim, p.query.dtype, True)
    except (ImportError, TypeError):
        return None


def prefill_call(p: PrefillProblem, out: torch.Tensor, checked: bool = False) -> Callable[[], torch.Tensor]:
    plan = None if checked else _prefill_plan(p)
    extra = {} if plan is None else {"plan": plan}

    def run() -> torch.Tensor:
        return kernels.paged_prefill(p.query, p.kv_cache, p.block_tables, p.query_start_loc,
                                     p.context_lens, p.scale, out=out, **extra)
    return run


def write_call(p: WriteProblem, checked: bool = False) -> Callable[[], None]:
    extra = {} if checked else _unchecked(kernels.write_kv)

    def run() -> None:
        kernels.write_kv(p.key, p.value, p.kv_cache, p.slot_mapping, kv_scales=p.kv_scales, **extra)
    return run
