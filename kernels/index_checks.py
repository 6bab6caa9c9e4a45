"""The index facts a checked launch needs, gathered on the device by one small kernel.

A checked `paged_decode` / `paged_prefill` must know, before its launch, that
every block a sequence uses lies in the cache, and the longest context; prefill
also that query_start_loc is a valid prefix sum inside the contexts. As torch
ops that was ~20 device ops (each ~5 us of host time on the H200) before the
one host read. Here one program walks the block table row tile by row tile,
reading only the columns a sequence uses, and writes every fact into one int64
vector that the host reads once (`read_index_facts`): one launch, one sync.

Facts (int64; NONE where nothing was found):
  0 shortest context  1 longest context  2 first bad block-table entry, row-major flat index
  with query_start_loc: 3 qsl[0]  4 qsl[num_seqs]  5 first sequence with qsl[i+1] < qsl[i]
  6 first sequence with more query tokens than context  7 longest query
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.launch import Kernel, launch

NONE = 2**62                     # "nothing found"; larger than any index or length
_NONE = tl.constexpr(NONE)
NUM_FACTS = 8
_ROWS = 16                       # sequences per tile
_COLS = 128                      # block-table columns per tile


@triton.jit
def _index_facts_kernel(tables_ptr, lens_ptr, qsl_ptr, facts_ptr,
                        num_seqs, num_cols, num_blocks, block_size, stride_t,
                        HAS_QSL: tl.constexpr, ROWS: tl.constexpr, COLS: tl.constexpr):
    lane = tl.arange(0, ROWS)
    col = tl.arange(0, COLS)
    lo = tl.full([ROWS], _NONE, tl.int64)
    hi = tl.full([ROWS], -_NONE, tl.int64)
    bad = tl.full([ROWS], _NONE, tl.int64)
    unordered = tl.full([ROWS], _NONE, tl.int64)
    too_long = tl.full([ROWS], _NONE, tl.int64)
    q_hi = tl.full([ROWS], -_NONE, tl.int64)
    for first in range(0, num_seqs, ROWS):
        rows = (first + lane).to(tl.int64)
        live = rows < num_seqs
        lens = tl.load(lens_ptr + rows, mask=live, other=0).to(tl.int64)
        lo = tl.minimum(lo, tl.where(live, lens, _NONE))
        hi = tl.maximum(hi, tl.where(live, lens, -_NONE))
        # Only the columns a sequence uses are read (and at most the table's width).
        used = tl.minimum((tl.maximum(lens, 0) + block_size - 1) // block_size, num_cols)
        for c in range(0, tl.max(used, axis=0), COLS):
            cols = c + col
            in_use = cols[None, :] < used[:, None]
            ids = tl.load(tables_ptr + rows[:, None] * stride_t + cols[None, :], mask=in_use, other=0)
            wrong = in_use & ((ids < 0) | (ids >= num_blocks))
            flat = rows[:, None] * num_cols + cols[None, :]
            bad = tl.minimum(bad, tl.min(tl.where(wrong, flat, _NONE), axis=1))
        if HAS_QSL:
            start = tl.load(qsl_ptr + rows, mask=live, other=0).to(tl.int64)
            q_len = tl.load(qsl_ptr + rows + 1, mask=live, other=0).to(tl.int64) - start
            unordered = tl.minimum(unordered, tl.where(live & (q_len < 0), rows, _NONE))
            too_long = tl.minimum(too_long, tl.where(live & (q_len > lens), rows, _NONE))
            q_hi = tl.maximum(q_hi, tl.where(live, q_len, -_NONE))
    tl.store(facts_ptr + 0, tl.min(lo, axis=0))
    tl.store(facts_ptr + 1, tl.max(hi, axis=0))
    tl.store(facts_ptr + 2, tl.min(bad, axis=0))
    if HAS_QSL:
        last = tl.load(qsl_ptr + num_seqs).to(tl.int64)
        tl.store(facts_ptr + 3, tl.load(qsl_ptr).to(tl.int64))
        tl.store(facts_ptr + 4, last)
        tl.store(facts_ptr + 5, tl.min(unordered, axis=0))
        tl.store(facts_ptr + 6, tl.min(too_long, axis=0))
        tl.store(facts_ptr + 7, tl.max(q_hi, axis=0))


_KERNEL = Kernel(_index_facts_kernel, "HAS_QSL", "ROWS", "COLS")


def read_index_facts(block_tables: torch.Tensor, context_lens: torch.Tensor, num_blocks: int, block_size: int,
                     query_start_loc: torch.Tensor | None = None) -> list[int]:
    """The facts above (one launch, one device-to-host read). Shapes, dtypes and
    devices must have been checked; num_seqs >= 1. Tensors in host memory (a plan
    built from CPU tensors for a GPU launch) are read on the host: a GPU kernel
    cannot reach them, and there is no sync to save."""
    num_seqs, num_cols = block_tables.shape
    has_qsl = query_start_loc is not None
    if block_tables.device.type == "cpu" and _KERNEL.jit:
        return host_index_facts(block_tables, context_lens, num_blocks, block_size, query_start_loc)
    facts = torch.empty(NUM_FACTS, dtype=torch.int64, device=block_tables.device)
    launch(_KERNEL, (1, 1, 1),
           (block_tables, context_lens, query_start_loc if has_qsl else context_lens, facts),
           (num_seqs, num_cols, num_blocks, block_size, block_tables.stride(0)),
           (has_qsl, _ROWS, _COLS), (("num_warps", 4),))
    return facts.tolist()


def host_index_facts(block_tables: torch.Tensor, context_lens: torch.Tensor, num_blocks: int, block_size: int,
                     query_start_loc: torch.Tensor | None = None) -> list[int]:
    """The same facts computed with plain Python over host copies (tested equal to the kernel's)."""
    lens = [int(n) for n in context_lens.tolist()]
    table = block_tables.tolist()
    num_cols = len(table[0]) if table else 0
    facts = [min(lens), max(lens), NONE] + [NONE] * (NUM_FACTS - 3)
    for row, (n, ids) in enumerate(zip(lens, table)):
        used = min(-(-max(n, 0) // block_size), num_cols)
        for col in range(used):
            if not 0 <= ids[col] < num_blocks:
                facts[2] = min(facts[2], row * num_cols + col)
                break
    if query_start_loc is not None:
        qsl = [int(x) for x in query_start_loc.tolist()]
        q_lens = [b - a for a, b in zip(qsl, qsl[1:])]
        facts[3], facts[4] = qsl[0], qsl[len(lens)]
        facts[5] = next((i for i, q in enumerate(q_lens) if q < 0), NONE)
        facts[6] = next((i for i, (q, n) in enumerate(zip(q_lens, lens)) if q > n), NONE)
        facts[7] = max(q_lens)
    return facts
