"""The prefill kernel's tile map, built by one small kernel.

The prefill kernel runs one program per (query tile of one sequence, query head).
Query tiles of a varlen batch do not line up with a regular grid, so an int32
map [2, max_tiles] tells each program its sequence (row 0; -1: an idle program)
and its tile within the sequence (row 1). The grid size must be known on the
host without reading query_start_loc, so max_tiles is the bound
sum_i ceil(q_i / m) <= ceil(T / m) + num_seqs.

Order: sequence by sequence, the longest context first (ties in batch order),
each sequence's tiles last first (its causal tiles see the most keys). Why: the
kernel runs the map once per KV head, so the programs running at once are one
sequence's query tiles and read the same K/V, which then stays in L2. Ordered by
key count alone, the tiles of all sequences interleaved, and at B=4 L=4096
32/32/128 the kernel re-read K/V from DRAM for every query tile (L2 hit rate 5 %,
3 TB/s of DRAM traffic, H200 ncu, session 8).

Why a kernel: as ~44 torch ops (cumsum, searchsorted, two argsorts, gathers) the
map cost 727 us of host time per batch on the H200 machine (torch.profiler,
session 9), four times the B=4 L=1024 prefill it ordered. Here program p takes
ROWS sequences, finds for each the tiles of every sequence ordered before it
(one pass over the batch, COLS sequences at a time: O(num_seqs^2 / ROWS) work,
0.3 M comparisons at 512 sequences), writes its sequences' tiles from that
offset and its share of the idle tail. No atomics, no sort: the same map every
run.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.launch import Kernel, cdiv, launch

_ROWS = 32     # sequences per program
_COLS = 128    # sequences compared (and tiles written) per step


@triton.jit
def _tile_map_kernel(qsl_ptr, ctx_ptr, map_ptr, num_seqs, max_tiles, block_m,
                     ROWS: tl.constexpr, COLS: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid * ROWS + tl.arange(0, ROWS)
    live = rows < num_seqs
    ctx = tl.load(ctx_ptr + rows, mask=live, other=0)
    q_len = tl.load(qsl_ptr + rows + 1, mask=live, other=0) - tl.load(qsl_ptr + rows, mask=live, other=0)
    # Clamped to the map's width and every store masked to it: a batch whose checks have not
    # run yet (kernels/prefill_plan.py builds the map before them) writes only inside the map.
    tiles = tl.where(live, tl.minimum((tl.maximum(q_len, 0) + block_m - 1) // block_m, max_tiles), 0)
    offset = tl.zeros([ROWS], tl.int32)
    total = tl.zeros([], tl.int32)
    lane = tl.arange(0, COLS)
    for first in range(0, num_seqs, COLS):
        other = first + lane
        o_live = other < num_seqs
        o_ctx = tl.load(ctx_ptr + other, mask=o_live, other=0)
        o_q = tl.load(qsl_ptr + other + 1, mask=o_live, other=0) - tl.load(qsl_ptr + other, mask=o_live, other=0)
        o_tiles = tl.where(o_live, tl.minimum((tl.maximum(o_q, 0) + block_m - 1) // block_m, max_tiles), 0)
        ahead = (o_ctx[None, :] > ctx[:, None]) | ((o_ctx[None, :] == ctx[:, None]) & (other[None, :] < rows[:, None]))
        offset += tl.sum(tl.where(ahead, o_tiles[None, :], 0), axis=1)
        total += tl.sum(o_tiles, axis=0)
    for k in range(0, tl.max(tiles, axis=0), COLS):
        t = k + lane
        pos = offset[:, None] + t[None, :]
        mine = (t[None, :] < tiles[:, None]) & (pos >= 0) & (pos < max_tiles)
        tl.store(map_ptr + pos, rows[:, None] + 0 * t[None, :], mask=mine)
        tl.store(map_ptr + max_tiles + pos, tiles[:, None] - 1 - t[None, :], mask=mine)
    # The idle tail [total, max_tiles), shared out evenly over the programs.
    span = tl.cdiv(max_tiles, tl.num_programs(0))
    for k in range(pid * span, tl.minimum(pid * span + span, max_tiles), COLS):
        pos = k + lane
        idle = (pos >= total) & (pos < tl.minimum(pid * span + span, max_tiles))
        tl.store(map_ptr + pos, tl.full([COLS], -1, tl.int32), mask=idle)
        tl.store(map_ptr + max_tiles + pos, tl.zeros([COLS], tl.int32), mask=idle)


_KERNEL = Kernel(_tile_map_kernel, "ROWS", "COLS")


def max_tiles(num_tokens: int, num_seqs: int, block_m: int) -> int:
    """Programs per query head of the prefill grid: a bound on the batch's query tiles."""
    return cdiv(num_tokens, block_m) + num_seqs


def maps_on_device(context_lens: torch.Tensor) -> bool:
    """Whether `build_tile_map` launches the kernel for these tensors (not `host_tile_map`)."""
    return not (context_lens.device.type == "cpu" and _KERNEL.jit)


def build_tile_map(query_start_loc: torch.Tensor, context_lens: torch.Tensor, num_tokens: int,
                   block_m: int) -> torch.Tensor:
    """int32 [2, max_tiles] (sequence, tile) per program, in the order above, for
    int32 tensors of checked shapes; on the device that holds them, no host sync.
    It is this order when their contents are checked too (query_start_loc a prefix
    sum of num_tokens, no query longer than its context); where `maps_on_device`,
    unchecked contents give some map, written inside its bounds. Host tensors
    outside the interpreter are mapped on the host (`host_tile_map`)."""
    num_seqs = context_lens.shape[0]
    width = max_tiles(num_tokens, num_seqs, block_m)
    if not maps_on_device(context_lens):
        return host_tile_map(query_start_loc.tolist(), context_lens.tolist(), width, block_m)
    tile_map = torch.empty((2, width), dtype=torch.int32, device=context_lens.device)
    if width == 0:
        return tile_map
    launch(_KERNEL, (max(1, cdiv(num_seqs, _ROWS)), 1, 1), (query_start_loc, context_lens, tile_map),
           (num_seqs, width, block_m), (_ROWS, _COLS), (("num_warps", 4),))
    return tile_map


def host_tile_map(query_start_loc: list[int], context_lens: list[int], width: int, block_m: int) -> torch.Tensor:
    """The same map from host lists, by a plain sort (tested equal to the kernel's)."""
    tiles = [-(-max(b - a, 0) // block_m) for a, b in zip(query_start_loc, query_start_loc[1:])]
    order = sorted(range(len(context_lens)), key=lambda i: (-context_lens[i], i))
    seq = [i for i in order for _ in range(tiles[i])]
    tile = [t for i in order for t in reversed(range(tiles[i]))]
    idle = width - len(seq)
    return torch.tensor([seq + [-1] * idle, tile + [0] * idle], dtype=torch.int32).reshape(2, width)
