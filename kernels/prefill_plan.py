"""Per-batch metadata of the paged prefill kernel: index checks and the tile map.

The kernel runs one program per (query tile of one sequence, query head). Query
tiles of a varlen batch do not line up with a regular grid, so a small int32
map, built on the device by one launch (kernels/tile_map.py, no host sync),
tells each program its sequence and tile. A batch's map is the same for every
layer: an engine builds one `PrefillPlan` per step with `plan_prefill` and passes
it to each layer's `paged_prefill` call, which then skips the index checks that
need host syncs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from kernels.prefill_config import PrefillConfig, prefill_config
from kernels.tile_map import build_tile_map, maps_on_device
from kernels.validation import check_index_tensors, check_indices, check_query_start_loc


@dataclass(frozen=True)
class PrefillPlan:
    tile_map: torch.Tensor   # int32 [2, max_tiles]: row 0 sequence (-1: idle program), row 1 tile within it
    config: PrefillConfig    # launch parameters; the map is built for config.block_m
    num_seqs: int
    num_tokens: int
    max_query_len: int
    # The launches of the calls made with this plan, by kernels/call_key.py's key: every
    # layer of a step calls with tensors of the same metadata, so all but the first replay
    # one (kernels/paged_prefill.py). At most LAUNCHES_PER_PLAN.
    launches: dict = field(default_factory=dict, compare=False, repr=False)


LAUNCHES_PER_PLAN = 16


def plan_prefill(query_start_loc: torch.Tensor, context_lens: torch.Tensor, block_tables: torch.Tensor,
                 num_tokens: int, num_blocks: int, block_size: int, head_dim: int,
                 query_dtype: torch.dtype, on_gpu: bool, **overrides: int | str | None) -> PrefillPlan:
    """Validate a batch's index data (one host sync: kernels/index_checks.py),
    choose the launch parameters (`prefill_config`, with `overrides`) and build
    the tile map for them (on the device, no further sync)."""
    device = context_lens.device if isinstance(context_lens, torch.Tensor) else torch.device("cpu")
    num_seqs = check_index_tensors(block_tables, context_lens, None, device)
    query_start_loc = check_query_start_loc(query_start_loc, num_seqs, device)
    return plan_checked(query_start_loc, context_lens, block_tables, num_seqs, num_tokens, num_blocks, block_size,
                        head_dim, query_dtype, on_gpu, **overrides)


def plan_checked(query_start_loc: torch.Tensor, context_lens: torch.Tensor, block_tables: torch.Tensor,
                 num_seqs: int, num_tokens: int, num_blocks: int, block_size: int, head_dim: int,
                 query_dtype: torch.dtype, on_gpu: bool, **overrides: int | str | None) -> PrefillPlan:
    """`plan_prefill` for index tensors that already passed `check_index_tensors` and
    `check_query_start_loc` (paged_prefill's checked path: it ran them itself)."""
    early = early_block_m(num_tokens, num_seqs, head_dim, query_dtype, on_gpu, overrides)
    # Mapped before the check's sync when the map's tile height is already known: its launch
    # then goes out while the device still runs earlier work, not after the sync (a launch's
    # host time there is device time lost). A batch the checks refuse just drops its map.
    tile_map = None
    if early is not None and maps_on_device(context_lens):
        tile_map = build_tile_map(query_start_loc, context_lens, num_tokens, early)
    facts = check_indices(block_tables, context_lens, num_blocks, block_size, query_start_loc, num_tokens)
    config = prefill_config(head_dim, query_dtype, on_gpu, facts.max_query_len, facts.longest, **overrides)
    if tile_map is None or config.block_m != early:
        tile_map = build_tile_map(query_start_loc, context_lens, num_tokens, config.block_m)
    return PrefillPlan(tile_map, config, num_seqs, num_tokens, facts.max_query_len)


def early_block_m(num_tokens: int, num_seqs: int, head_dim: int, query_dtype: torch.dtype, on_gpu: bool,
                  overrides: dict) -> int | None:
    """The block_m `prefill_config` will choose, when the sizes alone decide it: it
    depends on the longest query only, which lies in [ceil(T / S), T] (a valid batch),
    and where both ends give the same block_m every value between does (block_m
    grows with the longest query). None: the facts decide."""
    if num_seqs == 0 or num_tokens == 0:
        return None
    shortest_longest = -(-num_tokens // num_seqs)
    low = prefill_config(head_dim, query_dtype, on_gpu, shortest_longest, None, **overrides).block_m
    high = prefill_config(head_dim, query_dtype, on_gpu, num_tokens, None, **overrides).block_m
    return low if low == high else None
