"""Naive float64 attention: the oracle for the paged kernels.

Per sequence softmax(Q·Kᵀ·scale + mask)·V, GQA by repeating KV heads, causal
with offset: query i of a sequence with context c and query_len n attends to
keys 0 … c − n + i. Loops over sequences in Python on purpose: slow and plain.
"""
from __future__ import annotations

import torch

from reference.quant import dequantize_rows, is_quantized


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
              causal: bool = True) -> torch.Tensor:
    """q [n, Hq, D], k/v [c, Hkv, D] with c >= n. Returns float64 [n, Hq, D]."""
    n, num_heads, _ = q.shape
    c, num_kv_heads, _ = k.shape
    if num_heads % num_kv_heads:
        raise ValueError(f"query heads {num_heads} not a multiple of kv heads {num_kv_heads}")
    if c < n:
        raise ValueError(f"context {c} shorter than query length {n}")
    group = num_heads // num_kv_heads
    q64, k64, v64 = q.double(), k.double(), v.double()
    k64 = k64.repeat_interleave(group, dim=1)            # [c, Hq, D]
    v64 = v64.repeat_interleave(group, dim=1)
    scores = torch.einsum("nhd,chd->hnc", q64, k64) * scale
    if causal:
        qi = torch.arange(n).unsqueeze(1)
        kj = torch.arange(c).unsqueeze(0)
        allowed = kj <= (c - n) + qi                     # [n, c]
        scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.einsum("hnc,chd->nhd", probs, v64)


def gather_paged_kv(kv_cache: torch.Tensor, block_table: list[int] | torch.Tensor, context_len: int,
                    kv_scales: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Rebuild contiguous float64 K and V [context_len, Hkv, D] of one sequence from
    a cache [num_blocks, 2, block_size, Hkv, D] and its block table: token t lives
    in block block_table[t // block_size] at offset t % block_size."""
    block_size = kv_cache.shape[2]
    device = kv_cache.device
    table = torch.as_tensor(block_table, dtype=torch.long).to(device)
    t = torch.arange(context_len, device=device)
    blocks, offsets = table[t // block_size], t % block_size
    # Index on the cache's device, then bring only this sequence's rows to the CPU.
    k, v = kv_cache[blocks, 0, offsets].cpu(), kv_cache[blocks, 1, offsets].cpu()   # [context_len, Hkv, D]
    if is_quantized(kv_cache.dtype):
        if kv_scales is None:
            raise ValueError("kv_scales is required for a quantised cache")
        return (dequantize_rows(k, kv_scales[blocks, 0, offsets].cpu()),
                dequantize_rows(v, kv_scales[blocks, 1, offsets].cpu()))
    return k.double(), v.double()


def paged_decode(query: torch.Tensor, kv_cache: torch.Tensor, block_tables: torch.Tensor,
                 context_lens: torch.Tensor, scale: float,
                 kv_scales: torch.Tensor | None = None) -> torch.Tensor:
    """query [B, Hq, D] (one token per sequence, the last of its context) -> float64 [B, Hq, D]."""
    out = []
    for i in range(query.shape[0]):
        k, v = gather_paged_kv(kv_cache, block_tables[i], int(context_lens[i]), kv_scales)
        out.append(attention(query[i:i + 1].cpu(), k, v, scale)[0])
    return torch.stack(out)


def paged_prefill(query: torch.Tensor, kv_cache: torch.Tensor, block_tables: torch.Tensor,
                  query_start_loc: torch.Tensor, context_lens: torch.Tensor, scale: float,
                  kv_scales: torch.Tensor | None = None) -> torch.Tensor:
    """query [T, Hq, D], sequence i owns rows query_start_loc[i]:query_start_loc[i+1],
    which are the last tokens of its context -> float64 [T, Hq, D]."""
    out = torch.empty(query.shape, dtype=torch.float64)
    starts = [int(x) for x in query_start_loc.cpu()]
    for i in range(len(starts) - 1):
        lo, hi = starts[i], starts[i + 1]
        if hi == lo:
            continue
        k, v = gather_paged_kv(kv_cache, block_tables[i], int(context_lens[i]), kv_scales)
        out[lo:hi] = attention(query[lo:hi].cpu(), k, v, scale)
    return out
