"""Launch plans of paged_decode kept between calls of one call site (on its DecodeWorkspace).

A `DecodePlan` keeps what the full path of one call's metadata worked out (its
launches and split-K scratch); a repeat call only builds `call_key`
(kernels/call_key.py, which says why no check is weakened: the options include
the scale, every keyword and whether Triton interprets) and runs the plan's
launches with its own tensors.
"""
from __future__ import annotations

import torch

from kernels.launch import Prepared, run_prepared

PLANS_PER_WORKSPACE = 64     # an engine's context length moves every step: one new plan per step


class DecodePlan:
    """The launches of one call's metadata: the attention pass, the separate split-K
    reduce (or None) and the split-K scratch from the workspace they were planned
    with (kept: it outlives a regrown workspace, which keeps outgrown buffers).
    `register_only`: the attention pass is kernels/decode_quant_mma.py's, whose
    arguments are the inputs, `out`, the partials and the tickets (`out` again
    without them: it writes `out` only when it merges in-kernel)."""

    __slots__ = ("split", "reduce", "quantized", "partials", "tickets", "register_only")

    def __init__(self, split: Prepared, reduce: Prepared | None, quantized: bool,
                 partials: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None,
                 tickets: torch.Tensor | None, register_only: bool = False) -> None:
        self.split, self.reduce, self.quantized = split, reduce, quantized
        self.partials, self.tickets = partials, tickets          # (acc, max, sum) in kernel order
        self.register_only = register_only

    def run(self, query: torch.Tensor, kv_cache: torch.Tensor, kv_scales: torch.Tensor | None,
            block_tables: torch.Tensor, context_lens: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
        """Launch with these tensors (of the planned metadata); returns `out`
        (allocated like `query` when None, as the full path does)."""
        if out is None:
            out = torch.empty_like(query)
        if self.register_only:
            run_prepared(self.split, (query, kv_cache, kv_scales, block_tables, context_lens, out, *self.partials,
                                      out if self.tickets is None else self.tickets))
        else:
            run_prepared(self.split, split_ptrs(query, kv_cache, kv_scales if self.quantized else None,
                                                block_tables, context_lens, out, self.partials, self.tickets))
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
