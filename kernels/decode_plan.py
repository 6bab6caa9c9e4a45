"""Launch plans of paged_decode kept between calls of one call site (on its DecodeWorkspace).

An engine calls paged_decode from every layer of every step with tensors that
are new objects but have the same metadata. Everything the full path works out
(checks, config, strides, specialisation key, compiled kernel) is a function of
that metadata and the call's other arguments, so a `DecodePlan` keeps the result
and a repeat call only builds `call_key` and runs the plan's launches with its
own tensors. Data pointers stay out of the key (they change every call) except
their 16-byte alignment, which picks the compiled kernel.

No check is weakened: the key holds every input a check reads (each tensor's
exact type, shape, strides, dtype, device and alignment; the scale, the keywords
and the type of each, since 1 == 1.0 == True; whether Triton interprets), and a
plan is stored only after the full path passed with that key. Any difference is
a miss, and a miss is the full path, which raises what it always raised.
"""
from __future__ import annotations

import torch

from kernels.launch import Prepared, run_prepared

PLANS_PER_WORKSPACE = 64     # an engine's context length moves every step: one new plan per step


def call_key(query: object, kv_cache: object, block_tables: object, context_lens: object,
             kv_scales: object, out: object, options: tuple) -> tuple | None:
    """The metadata of one paged_decode call that its plan depends on, or None
    when an argument is not a plain tensor (the full path says what is wrong).
    Written out flat: this is most of a repeat call's host time."""
    tensor = torch.Tensor
    if not (type(query) is tensor and type(kv_cache) is tensor and type(block_tables) is tensor
            and type(context_lens) is tensor and (kv_scales is None or type(kv_scales) is tensor)
            and (out is None or type(out) is tensor)):
        return None
    try:
        return (query.size(), query.stride(), query.dtype, query.device, query.data_ptr() & 15,
                kv_cache.size(), kv_cache.stride(), kv_cache.dtype, kv_cache.device, kv_cache.data_ptr() & 15,
                block_tables.size(), block_tables.stride(), block_tables.dtype, block_tables.device,
                block_tables.data_ptr() & 15,
                context_lens.size(), context_lens.stride(), context_lens.dtype, context_lens.device,
                context_lens.data_ptr() & 15,
                None if kv_scales is None else (kv_scales.size(), kv_scales.stride(), kv_scales.dtype,
                                                kv_scales.device, kv_scales.data_ptr() & 15),
                None if out is None else (out.size(), out.stride(), out.dtype, out.device, out.data_ptr() & 15),
                options, tuple(map(type, options)))
    except RuntimeError:                 # a strideless (sparse, nested) tensor: the full path's business
        return None


class DecodePlan:
    """The launches of one call's metadata: the attention pass, the separate split-K
    reduce (or None) and the split-K scratch from the workspace they were planned
    with (kept: it outlives a regrown workspace, which keeps outgrown buffers)."""

    __slots__ = ("split", "reduce", "quantized", "partials", "tickets")

    def __init__(self, split: Prepared, reduce: Prepared | None, quantized: bool,
                 partials: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
                 tickets: torch.Tensor | None) -> None:
        self.split, self.reduce, self.quantized = split, reduce, quantized
        self.partials, self.tickets = partials, tickets          # (acc, max, sum) in kernel order

    def run(self, query: torch.Tensor, kv_cache: torch.Tensor, kv_scales: torch.Tensor | None,
            block_tables: torch.Tensor, context_lens: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
        """Launch with these tensors (of the planned metadata); returns `out`
        (allocated like `query` when None, as the full path does)."""
        if out is None:
            out = torch.empty_like(query)
        run_prepared(self.split, split_ptrs(query, kv_cache, kv_scales if self.quantized else None, block_tables,
                                            context_lens, out, self.partials, self.tickets))
        if self.reduce is not None:
            run_prepared(self.reduce, (out, *self.partials, context_lens))
        return out


def split_ptrs(query: torch.Tensor, kv_cache: torch.Tensor, kv_scales: torch.Tensor | None,
               block_tables: torch.Tensor, context_lens: torch.Tensor, out: torch.Tensor,
               partials: tuple[torch.Tensor, ...] | None, tickets: torch.Tensor | None) -> tuple:
    """The attention pass's tensor arguments in signature order. A pointer the launch
    never reads gets a tensor of the call (`kv_cache`, `out`): aligned, of a fixed dtype."""
    return (query, kv_cache, kv_cache if kv_scales is None else kv_scales, block_tables, context_lens, out,
            *(partials or (out, out, out)), out if tickets is None else tickets)


class DecodePlans:
    """Plans by `call_key`, at most `limit` (the oldest goes first). One per call
    site (a DecodeWorkspace holds one), so nothing is shared between call sites."""

    __slots__ = ("_plans", "_limit")

    def __init__(self, limit: int = PLANS_PER_WORKSPACE) -> None:
        self._plans: dict[tuple, DecodePlan] = {}
        self._limit = limit

    def __len__(self) -> int:
        return len(self._plans)

    def get(self, key: tuple) -> DecodePlan | None:
        return self._plans.get(key)

    def put(self, key: tuple, plan: DecodePlan) -> None:
        if key not in self._plans and len(self._plans) >= self._limit:
            del self._plans[next(iter(self._plans))]
        self._plans[key] = plan

    def __contains__(self, key: object) -> bool:
        return key in self._plans
