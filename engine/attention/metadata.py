"""Per-step attention metadata: built and validated once per step, read by every layer.

Token order of a step's flat batch: the decodes first (one token each), then the
prefill chunks, each chunk's tokens contiguous and in position order. Sequence i
of the step owns tokens [query_start_loc[i], query_start_loc[i + 1]); its queries
are the last query_len tokens of its context_lens[i] tokens (the cached prefix +
the tokens computed this step, whose K/V the backend writes before attending).

Device tensors drive the kernels; the Python ints and lists beside them let a
layer pick a path and size a launch without reading the device (no host sync).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AttentionMetadata:
    slot_mapping: torch.Tensor       # int64 [num_tokens]: cache slot of each token, -1 = skip
    block_tables: torch.Tensor       # int32 [num_seqs, max_blocks]: padding never read
    context_lens: torch.Tensor       # int32 [num_seqs]: tokens with KV after this step
    query_start_loc: torch.Tensor    # int32 [num_seqs + 1]: prefix sums of query lengths
    num_decodes: int                 # sequences 0..num_decodes-1 compute one token each
    num_prefill_tokens: int
    max_query_len: int
    max_context_len: int
    # Host copies (the torch backend loops over sequences; tests read them).
    query_lens: tuple[int, ...]
    context_lens_host: tuple[int, ...]
    block_size: int

    @property
    def num_seqs(self) -> int:
        return len(self.query_lens)

    @property
    def num_decode_tokens(self) -> int:
        return self.num_decodes

    @property
    def num_tokens(self) -> int:
        return self.num_decodes + self.num_prefill_tokens

    @property
    def is_decode_only(self) -> bool:
        return self.num_prefill_tokens == 0


def build_metadata(block_tables: list[list[int]], query_lens: list[int],
                   context_lens: list[int], num_decodes: int, block_size: int,
                   num_blocks: int, device: torch.device | str) -> AttentionMetadata:
    """Metadata for one step from plain lists, validated here once so that the
    layers can call the kernels unchecked.

    block_tables[i]: sequence i's physical blocks (at least ceil(context_lens[i] /
    block_size) of them, each in [0, num_blocks)); query_lens[i] >= 1 tokens of
    sequence i are computed this step, the last ones of its context_lens[i].
    Raises ValueError naming the sequence and the problem."""
    n = len(query_lens)
    if len(block_tables) != n or len(context_lens) != n:
        raise ValueError(f"block_tables ({len(block_tables)}), query_lens ({n}) and "
                         f"context_lens ({len(context_lens)}) must have one entry per sequence")
    if not 0 <= num_decodes <= n:
        raise ValueError(f"num_decodes={num_decodes} must lie in [0, {n}]")
    slots: list[int] = []
    for i, (table, q, ctx) in enumerate(zip(block_tables, query_lens, context_lens)):
        if q < 1 or q > ctx:
            raise ValueError(f"sequence {i}: query_len {q} must lie in [1, context_len={ctx}]")
        if i < num_decodes and q != 1:
            raise ValueError(f"sequence {i}: a decode computes 1 token, got query_len {q}")
        needed = -(-ctx // block_size)
        if len(table) < needed:
            raise ValueError(f"sequence {i}: {ctx} tokens need {needed} blocks of "
                             f"{block_size}, its block table has {len(table)}")
        for b in table[:needed]:
            if not 0 <= b < num_blocks:
                raise ValueError(f"sequence {i}: block {b} is outside the cache's "
                                 f"{num_blocks} blocks")
        for pos in range(ctx - q, ctx):
            slots.append(table[pos // block_size] * block_size + pos % block_size)
    width = max((-(-c // block_size) for c in context_lens), default=1) or 1
    padded = [list(t[:width]) + [0] * (width - min(len(t), width)) for t in block_tables]
    starts = [0]
    for q in query_lens:
        starts.append(starts[-1] + q)
    num_prefill_tokens = starts[-1] - num_decodes
    return AttentionMetadata(
        slot_mapping=torch.tensor(slots, dtype=torch.int64, device=device),
        block_tables=torch.tensor(padded, dtype=torch.int32, device=device).reshape(n, width),
        context_lens=torch.tensor(context_lens, dtype=torch.int32, device=device),
        query_start_loc=torch.tensor(starts, dtype=torch.int32, device=device),
        num_decodes=num_decodes,
        num_prefill_tokens=num_prefill_tokens,
        max_query_len=max(query_lens, default=0),
        max_context_len=max(context_lens, default=0),
        query_lens=tuple(query_lens),
        context_lens_host=tuple(context_lens),
        block_size=block_size,
    )
