"""The same attention problems through PyTorch, as peers measured in the same run.

- FlexAttention paged decode, in one of two layouts:
  * over our cache itself (no copy): the cache `[num_blocks, 2, block_size, Hkv, D]`
    flattened to slots interleaves K and V blocks, so K is the slot sequence from
    0 and V the same sequence shifted by one block; the K of cache block b is
    flex block 2b and the BlockMask's kv indices are 2 * the block table. The
    flex kernel then runs with BLOCK_N = block_size (16): correct, but small tiles.
  * in flex's own paged layout (what torch's PagedAttention helper does): K and
    V copied once, outside timing, into `[1, Hkv, pages * page_size, D]` pages of
    `page_size` tokens (128 suits flex's tiles) under a random page table.
  Full pages go in the full-block lists (no mask_mod evaluated); a sequence's
  last, partial page goes in the partial list, where mask_mod keeps its live
  slots. Flex's decoding kernel sizes its KV splits by the whole kv length (all
  pages of the pool), not by one sequence's pages, so at small batches some of
  its splits get no pages: a limitation of flex over a shared page pool (torch's
  own PagedAttention helper builds the same BlockMask), kept as the peer is
  shipped. It also needs Hq/Hkv to be a power of two: 9/3 runs flex's general
  kernel, one program per query head (`flex_kernel` in the JSON says which). Seen with torch 2.11 on an H100 (2026-11): the kv index lists must be
  as wide as the number of kv blocks (as the helper makes them), else the
  compiled kernel returns wrong results or reads out of bounds.
- Gather + SDPA: index the cache with the block table into contiguous K/V,
  dequantise if needed (in the query dtype), then `scaled_dot_product_attention`
  (the naive way).
- SDPA flash for prefill, on the unpaged tensors.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.flex_attention import BlockMask, flex_attention

# Flex's query tile: flex decoding needs it to be a multiple of its BLOCK_M (>= 16).
FLEX_Q_BLOCK = 128
FLEX_PAGE = 128
RELAYOUT_CHUNK_BYTES = 2 * 1024**3


def _check_cache(kv_cache: torch.Tensor) -> None:
    if kv_cache.dim() != 5 or kv_cache.shape[1] != 2:
        raise ValueError(f"kv_cache must be [num_blocks, 2, block_size, Hkv, D], got {tuple(kv_cache.shape)}")


def flex_kv_views(kv_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """K and V as [1, Hkv, (2 * num_blocks - 1) * block_size, D] views of the cache's storage."""
    _check_cache(kv_cache)
    if not kv_cache.is_contiguous():
        raise ValueError("kv_cache must be contiguous for the flex views")
    num_blocks, _, block_size, hkv, d = kv_cache.shape
    slots = kv_cache.view(num_blocks * 2 * block_size, hkv, d)
    length = (2 * num_blocks - 1) * block_size
    k = slots[:length].permute(1, 0, 2).unsqueeze(0)
    v = slots[block_size:block_size + length].permute(1, 0, 2).unsqueeze(0)
    return k, v


def flex_block_mask(page_table: torch.Tensor, context_lens: torch.Tensor, num_pages: int, page_size: int,
                    stride: int = 1) -> BlockMask:
    """A decode BlockMask whose kv indices are `stride` * the page table, over a kv
    sequence where page p starts at position stride * p * page_size. Built on the
    device. Every page must belong to at most one sequence (true of the benchmark
    problems; shared prefix pages would need a per-sequence inverse table)."""
    device = page_table.device
    num_seqs, cols = page_table.shape
    lens = context_lens.long()
    table = page_table.long().clamp(0, num_pages - 1)
    col = torch.arange(cols, device=device)
    used = col.unsqueeze(0) < ((lens + page_size - 1) // page_size).unsqueeze(1)
    # Inverse table: which sequence owns page p, and at which logical index.
    owner = torch.full((num_pages,), -1, dtype=torch.long, device=device)
    logical = torch.zeros(num_pages, dtype=torch.long, device=device)
    owner[table[used]] = torch.arange(num_seqs, device=device).unsqueeze(1).expand(num_seqs, cols)[used]
    logical[table[used]] = col.unsqueeze(0).expand(num_seqs, cols)[used]

    kv_blocks = stride * num_pages - (stride - 1)
    full_idx = torch.zeros((num_seqs, kv_blocks), dtype=torch.int32, device=device)
    full_idx[:, :cols] = (stride * table).to(torch.int32)
    part_idx = torch.zeros((num_seqs, kv_blocks), dtype=torch.int32, device=device)
    part_idx[:, 0] = (stride * table.gather(1, (lens // page_size).clamp(max=cols - 1).unsqueeze(1))).squeeze(1)
    full = (lens // page_size).to(torch.int32)
    partial = (lens % page_size != 0).to(torch.int32)
    span = stride * page_size

    def mask_mod(b, h, q_idx, kv_idx):
        page, off = kv_idx // span, kv_idx % span
        return (off < page_size) & (owner[page] == b) & (logical[page] * page_size + off < context_lens[b])

    shape = (num_seqs, 1, 1)
    return BlockMask.from_kv_blocks(
        partial.view(shape), part_idx.view(*shape, kv_blocks), full.view(shape), full_idx.view(*shape, kv_blocks),
        BLOCK_SIZE=(FLEX_Q_BLOCK, page_size), mask_mod=mask_mod,
        seq_lengths=(1, kv_blocks * page_size), compute_q_blocks=False)


def flex_relayout(kv_cache: torch.Tensor, block_tables: torch.Tensor, max_context: int, page_size: int,
                  gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Copy each sequence's K/V into flex's own layout: K, V [1, Hkv, pages * page_size, D]
    and an int32 page table [B, ceil(max_context / page_size)] (a random permutation)."""
    num_seqs = block_tables.shape[0]
    _, _, _, hkv, d = kv_cache.shape
    per_seq = -(-max_context // page_size)
    num_pages = num_seqs * per_seq
    device = kv_cache.device
    table = torch.randperm(num_pages, generator=gen, device=device).view(num_seqs, per_seq)
    dtype = torch.bfloat16 if kv_cache.element_size() == 1 else kv_cache.dtype
    k = torch.zeros((hkv, num_pages, page_size, d), dtype=dtype, device=device)
    v = torch.zeros_like(k)
    seq_bytes = 2 * max_context * hkv * d * k.element_size()
    step = max(1, RELAYOUT_CHUNK_BYTES // seq_bytes)
    for lo in range(0, num_seqs, step):
        hi = min(lo + step, num_seqs)
        ks, vs = gather_kv(kv_cache, block_tables[lo:hi], max_context, None, dtype)  # [n, Hkv, L, D]
        pages = table[lo:hi].flatten()
        for src, dst in ((ks, k), (vs, v)):
            padded = torch.zeros((hi - lo, hkv, per_seq * page_size, d), dtype=dtype, device=device)
            padded[:, :, :max_context] = src
            dst[:, pages] = padded.view(hi - lo, hkv, per_seq, page_size, d).transpose(0, 1).flatten(1, 2)
    flat = (1, hkv, num_pages * page_size, d)
    return k.view(flat), v.view(flat), table.to(torch.int32)


def flex_kernel_kind(num_heads: int, num_kv_heads: int) -> str:
    """Which flex kernel inductor picks for our (static-batch, one-token) decode:
    its decoding kernel needs Hq / Hkv to be a power of two."""
    ratio = num_heads // num_kv_heads
    if ratio >= 1 and ratio & (ratio - 1) == 0:
        return "flex decoding"
    return f"flex general (GQA ratio {ratio} is not a power of two)"


def flex_decode_fn(query: torch.Tensor, kv_cache: torch.Tensor, block_tables: torch.Tensor,
                   context_lens: torch.Tensor, scale: float, max_context: int, page_size: int | None = None,
                   attend: Callable[..., torch.Tensor] = flex_attention) -> Callable[[], torch.Tensor]:
    """A no-argument paged decode through FlexAttention: query [B, Hq, D] -> [B, Hq, D].
    `page_size=None` runs over our cache in place; otherwise over a copy in flex's
    layout with pages of `page_size`. Pass a `torch.compile`d flex_attention as
    `attend` on the GPU; eager flex is the math fallback (used by the CPU tests)."""
    block_size = kv_cache.shape[2]
    if kv_cache.element_size() == 1:
        raise ValueError(f"FlexAttention takes no {kv_cache.dtype} KV cache; pass a float cache")
    if page_size is None:
        k, v = flex_kv_views(kv_cache)
        mask = flex_block_mask(block_tables, context_lens, kv_cache.shape[0], block_size, stride=2)
        options = {"BLOCK_N": block_size} if block_size < 64 else None
    else:
        k, v, table = flex_relayout(kv_cache, block_tables, max_context, page_size)
        mask = flex_block_mask(table, context_lens, table.numel(), page_size)
        options = {"BLOCK_N": page_size} if page_size < 64 else None
    q = query.unsqueeze(2)
    # Inductor picks flex's decoding kernel only for a static batch and head count;
    # after one recompile dynamo would make the batch symbolic and every later batch
    # size would run the general flex kernel (seen in session 3's review).
    torch._dynamo.mark_static(q, 0)
    torch._dynamo.mark_static(q, 1)
    gqa = query.shape[1] != kv_cache.shape[3]

    def run() -> torch.Tensor:
        return attend(q, k, v, block_mask=mask, scale=scale, enable_gqa=gqa, kernel_options=options).squeeze(2)
    return run


def gather_kv(kv_cache: torch.Tensor, block_tables: torch.Tensor, max_context: int,
              kv_scales: torch.Tensor | None, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Contiguous K, V [B, Hkv, max_context, D] in `dtype`, gathered through the block table."""
    _check_cache(kv_cache)
    num_seqs = block_tables.shape[0]
    _, _, block_size, hkv, d = kv_cache.shape
    cols = -(-max_context // block_size)
    idx = block_tables[:, :cols].long()
    out = []
    for i in (0, 1):
        rows = kv_cache[:, i][idx]                              # [B, cols, bs, Hkv, D]
        if kv_scales is not None:          # in the attention dtype, as a fair naive peer would
            rows = rows.to(dtype) * kv_scales[:, i][idx].unsqueeze(-1).to(dtype)
        rows = rows.to(dtype).view(num_seqs, cols * block_size, hkv, d)[:, :max_context]
        out.append(rows.transpose(1, 2))
    return out[0], out[1]


def gather_sdpa_decode(query: torch.Tensor, kv_cache: torch.Tensor, block_tables: torch.Tensor,
                       context_lens: torch.Tensor, scale: float, max_context: int,
                       kv_scales: torch.Tensor | None = None, uniform: bool = False) -> torch.Tensor:
    """Naive paged decode: gather, then SDPA. `max_context` is passed from the host so
    the call never syncs; `uniform` (every context == max_context) drops the mask."""
    k, v = gather_kv(kv_cache, block_tables, max_context, kv_scales, query.dtype)
    mask = None
    if not uniform:
        live = torch.arange(max_context, device=query.device).unsqueeze(0) < context_lens.unsqueeze(1)
        mask = live[:, None, None, :]
    out = F.scaled_dot_product_attention(query.unsqueeze(2), k, v, attn_mask=mask, scale=scale,
                                         enable_gqa=query.shape[1] != kv_cache.shape[3])
    return out.squeeze(2)


def sdpa_flash_prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal attention on unpaged [B, H, L, D] tensors through the flash backend only."""
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale,
                                              enable_gqa=q.shape[1] != k.shape[1])


def sdpa_extend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Queries [B, H, Q, D] that are the last Q of the L keys [B, H, L, D]: causal aligned
    to the end (lower right), through SDPA's own choice of kernel for that bias."""
    from torch.nn.attention.bias import causal_lower_right
    bias = causal_lower_right(q.shape[2], k.shape[2])
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
