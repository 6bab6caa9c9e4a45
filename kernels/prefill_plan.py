"""Per-batch metadata of the paged prefill kernel: index checks and the tile map.

The kernel runs one program per (query tile of one sequence, query head). Query
tiles of a varlen batch do not line up with a regular grid, so a small int32
map, built on the device with torch ops (no host sync), tells each program its
sequence and tile. A batch's map is the same for every layer: an engine builds
one `PrefillPlan` per step with `plan_prefill` and passes it to each layer's
`paged_prefill` call, which then skips the index checks that need host syncs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from kernels.prefill_config import PrefillConfig, prefill_config
from kernels.validation import check_index_tensors, check_indices, check_query_start_loc


@dataclass(frozen=True)
class PrefillPlan:
    tile_map: torch.Tensor   # int32 [2, max_tiles]: row 0 sequence (-1: idle program), row 1 tile within it
    config: PrefillConfig    # launch parameters; the map is built for config.block_m
    num_seqs: int
    num_tokens: int
    max_query_len: int


def build_tile_map(query_start_loc: torch.Tensor, context_lens: torch.Tensor, num_tokens: int,
                   block_m: int) -> torch.Tensor:
    """int32 [2, max_tiles] (sequence, tile) per program: sequence by sequence, the
    longest sequences first, each one's tiles longest first.

    Sequence i has ceil(query_len_i / block_m) tiles; with cum the inclusive
    cumulative tile counts, global tile t belongs to the sequence
    searchsorted(cum, t, right=True). The grid size must be known on the host
    without reading query_start_loc, so it is the bound
    sum_i ceil(q_i / m) <= ceil(T / m) + num_seqs; programs past the real count
    get sequence -1 and exit.

    Why this order: the kernel runs the map once per KV head, so the programs
    running at once are one sequence's query tiles (and the query heads sharing
    their KV head), which read the same K/V: it stays in L2. Ordered by key
    count alone, the tiles of all sequences and heads interleaved, and at
    B=4 L=4096 32/32/128 the kernel re-read K/V from DRAM for every query tile
    (L2 hit rate 5 %, 3 TB/s of DRAM traffic, H200 ncu). Longest sequences
    first and each sequence's long causal tiles first still let the short ones
    fill the tail of the launch.
    """
    device = query_start_loc.device
    num_seqs = context_lens.shape[0]
    max_tiles = -(-num_tokens // block_m) + num_seqs
    starts = query_start_loc.long()
    query_lens = starts[1:] - starts[:-1]
    tiles = (query_lens + block_m - 1) // block_m
    cum = torch.cumsum(tiles, 0)
    t = torch.arange(max_tiles, device=device)
    seq = torch.searchsorted(cum, t, right=True)
    live = seq < num_seqs
    seq_c = seq.clamp(max=max(num_seqs - 1, 0))
    tile_in_seq = t - (cum[seq_c] - tiles[seq_c])
    ctx = context_lens.long()
    keys = ctx[seq_c] - query_lens[seq_c] + torch.minimum((tile_in_seq + 1) * block_m, query_lens[seq_c])
    # Rank of each sequence, longest context first (ties: batch order); idle programs last.
    seq_rank = torch.empty_like(ctx)
    seq_rank[torch.argsort(ctx, descending=True, stable=True)] = torch.arange(num_seqs, device=device)
    rank = torch.where(live, seq_rank[seq_c], num_seqs)
    # One sort on (rank, then most keys first): keys < 2**31, so both fit one int64.
    order = torch.argsort(rank * 2**32 + (2**31 - 1 - torch.where(live, keys, 0)))
    seq_out = torch.where(live, seq, -1)[order]
    return torch.stack([seq_out, tile_in_seq[order]]).to(torch.int32).contiguous()


def plan_prefill(query_start_loc: torch.Tensor, context_lens: torch.Tensor, block_tables: torch.Tensor,
                 num_tokens: int, num_blocks: int, block_size: int, head_dim: int,
                 query_dtype: torch.dtype, on_gpu: bool, **overrides: int | None) -> PrefillPlan:
    """Validate a batch's index data (one host sync: kernels/index_checks.py),
    choose the launch parameters (`prefill_config`, with `overrides`) and build
    the tile map for them (on the device, no further sync)."""
    device = context_lens.device if isinstance(context_lens, torch.Tensor) else torch.device("cpu")
    num_seqs = check_index_tensors(block_tables, context_lens, None, device)
    query_start_loc = check_query_start_loc(query_start_loc, num_seqs, device)
    facts = check_indices(block_tables, context_lens, num_blocks, block_size, query_start_loc, num_tokens)
    config = prefill_config(head_dim, query_dtype, on_gpu, facts.max_query_len, facts.longest, **overrides)
    tile_map = build_tile_map(query_start_loc, context_lens, num_tokens, config.block_m)
    return PrefillPlan(tile_map, config, num_seqs, num_tokens, facts.max_query_len)
