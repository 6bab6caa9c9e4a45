"""Builders of random paged KV caches for the kernel conformance tests.

Everything is drawn from an explicit torch.Generator seeded by Hypothesis. Slots
no sequence owns are poisoned with NaN (in the cache for float dtypes, in the
scales for quantised ones) so a kernel that reads them produces NaN.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from reference.quant import is_quantized, quantize_rows


@dataclass
class PagedKV:
    kv_cache: torch.Tensor          # [num_blocks, 2, block_size, Hkv, D]
    kv_scales: torch.Tensor | None  # [num_blocks, 2, block_size, Hkv] for int8/fp8
    block_tables: torch.Tensor      # int32 [num_seqs, max_blocks]
    context_lens: torch.Tensor      # int32 [num_seqs]

    @property
    def block_size(self) -> int:
        return self.kv_cache.shape[2]


def poisoned_cache(num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int,
                   cache_dtype: torch.dtype, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A cache whose every slot reads as NaN until written."""
    shape = (num_blocks, 2, block_size, num_kv_heads, head_dim)
    if cache_dtype == torch.int8:
        cache = torch.zeros(shape, dtype=torch.int8, device=device)
    elif cache_dtype == torch.float8_e4m3fn:
        # 0x7F is e4m3fn's NaN; built as bytes so no float32 copy of a huge cache is made.
        cache = torch.full(shape, 0x7F, dtype=torch.uint8, device=device).view(torch.float8_e4m3fn)
    else:
        cache = torch.full(shape, float("nan"), dtype=cache_dtype, device=device)
    scales = None
    if is_quantized(cache_dtype):
        scales = torch.full(shape[:4], float("nan"), dtype=torch.float32, device=device)
    return cache, scales


def make_paged_kv(gen: torch.Generator, context_lens: list[int], num_kv_heads: int, head_dim: int,
                  block_size: int, cache_dtype: torch.dtype, device: torch.device | str = "cpu",
                  spare_blocks: int = 3, extra_table_cols: int = 1,
                  num_blocks: int | None = None) -> PagedKV:
    """Random K/V for each sequence, scattered over a random permutation of blocks.
    `num_blocks` (default: just enough + spare) lets a test make a huge cache to
    catch 32-bit offset overflow; the used blocks are then drawn from all of it."""
    blocks_per_seq = [(c + block_size - 1) // block_size for c in context_lens]
    needed = sum(blocks_per_seq)
    total = num_blocks if num_blocks is not None else needed + spare_blocks
    if total < needed:
        raise ValueError(f"num_blocks {total} < {needed} blocks the contexts need")
    cache, scales = poisoned_cache(total, block_size, num_kv_heads, head_dim, cache_dtype, device)
    order = torch.randperm(total, generator=gen).tolist()
    perm = order[:needed]
    max_cols = max(blocks_per_seq, default=0) + extra_table_cols
    # Padding columns point at a valid but never-written (NaN) block when there is
    # a spare one: a kernel that reads past a sequence's blocks turns its output NaN.
    pad_block = order[needed] if total > needed else total - 1
    tables = torch.full((len(context_lens), max(max_cols, 1)), pad_block, dtype=torch.int32)
    cursor = 0
    for i, (ctx, nb) in enumerate(zip(context_lens, blocks_per_seq)):
        ids = perm[cursor:cursor + nb]
        cursor += nb
        tables[i, :nb] = torch.tensor(ids, dtype=torch.int32)
        kv = torch.randn((2, ctx, num_kv_heads, head_dim), generator=gen)
        for t in range(0, ctx, block_size):
            n = min(block_size, ctx - t)
            blk = ids[t // block_size]
            rows = kv[:, t:t + n].to(device)
            if is_quantized(cache_dtype):
                q, s = quantize_rows(rows, cache_dtype)
                cache[blk, :, :n] = q
                scales[blk, :, :n] = s
            else:
                cache[blk, :, :n] = rows.to(cache_dtype)
    return PagedKV(cache, scales, tables.to(device), torch.tensor(context_lens, dtype=torch.int32, device=device))


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """‖out − ref‖ / ‖ref‖ in float64."""
    out64, ref64 = out.double().cpu(), ref.double().cpu()
    return float((out64 - ref64).norm() / ref64.norm().clamp_min(1e-30))
