"""Benchmark problems built on the device in a few vectorised passes.

The conformance builders (conformance/paged_cases.py) loop over tokens in
Python, which is fine for a few hundred tokens and hopeless for a 17 GB cache.
Here every sequence has the same context, the block table is a random
permutation of all blocks (so reads scatter over the cache as they do in a
serving engine), and the cache is filled by `randn` straight into its dtype;
quantised caches are filled block-chunk by block-chunk through
`reference.quant.quantize_rows`, the oracle's own arithmetic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from reference.quant import is_quantized, quantize_rows

QUANT_CHUNK_BLOCKS = 4096


@dataclass
class DecodeProblem:
    query: torch.Tensor              # [B, Hq, D]
    kv_cache: torch.Tensor           # [num_blocks, 2, block_size, Hkv, D]
    kv_scales: torch.Tensor | None   # [num_blocks, 2, block_size, Hkv] for int8/fp8
    block_tables: torch.Tensor       # int32 [B, blocks_per_seq]
    context_lens: torch.Tensor       # int32 [B]
    context: int                     # every sequence's context (host copy: no device sync)
    scale: float

    def bytes_moved(self) -> int:
        """KV read once (with scales) + block table + lengths + query read + output written."""
        b, hkv, d = self.block_tables.shape[0], self.kv_cache.shape[3], self.kv_cache.shape[4]
        kv = b * self.context * 2 * hkv * d * self.kv_cache.element_size()
        if self.kv_scales is not None:
            kv += b * self.context * 2 * hkv * 4
        meta = self.block_tables.numel() * 4 + b * 4
        return kv + meta + 2 * self.query.numel() * self.query.element_size()


def cache_bytes(batch: int, context: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype,
                block_size: int = 16) -> int:
    blocks = batch * math.ceil(context / block_size)
    per_slot = 2 * num_kv_heads * head_dim * torch.empty(0, dtype=dtype).element_size()
    return blocks * block_size * per_slot


def fill_cache(kv_cache: torch.Tensor, kv_scales: torch.Tensor | None, gen: torch.Generator) -> None:
    """Random N(0, 1) K/V in every slot; quantised through the oracle's quantize_rows."""
    if not is_quantized(kv_cache.dtype):
        kv_cache.normal_(generator=gen)  # in place: a 17 GB cache has no room for a temporary
        return
    for lo in range(0, kv_cache.shape[0], QUANT_CHUNK_BLOCKS):
        hi = min(lo + QUANT_CHUNK_BLOCKS, kv_cache.shape[0])
        rows = torch.randn(kv_cache[lo:hi].shape, generator=gen, device=kv_cache.device, dtype=torch.float32)
        q, s = quantize_rows(rows, kv_cache.dtype)
        kv_cache[lo:hi] = q
        kv_scales[lo:hi] = s


def decode_problem(batch: int, context: int, num_heads: int, num_kv_heads: int, head_dim: int,
                   cache_dtype: torch.dtype = torch.bfloat16, query_dtype: torch.dtype = torch.bfloat16,
                   block_size: int = 16, device: torch.device | str = "cuda", seed: int = 0) -> DecodeProblem:
    """`batch` sequences of `context` tokens each, scattered over a random permutation of blocks."""
    if num_heads % num_kv_heads:
        raise ValueError(f"num_heads {num_heads} must be a multiple of num_kv_heads {num_kv_heads}")
    if batch < 1 or context < 1:
        raise ValueError(f"batch and context must be >= 1, got {batch}, {context}")
    gen = torch.Generator(device=device).manual_seed(seed)
    per_seq = math.ceil(context / block_size)
    num_blocks = batch * per_seq
    kv_cache = torch.empty((num_blocks, 2, block_size, num_kv_heads, head_dim), dtype=cache_dtype, device=device)
    kv_scales = None
    if is_quantized(cache_dtype):
        kv_scales = torch.empty(kv_cache.shape[:4], dtype=torch.float32, device=device)
    fill_cache(kv_cache, kv_scales, gen)
    perm = torch.randperm(num_blocks, generator=gen, device=device)
    block_tables = perm.view(batch, per_seq).to(torch.int32)
    context_lens = torch.full((batch,), context, dtype=torch.int32, device=device)
    query = torch.randn((batch, num_heads, head_dim), generator=gen, device=device, dtype=query_dtype)
    return DecodeProblem(query, kv_cache, kv_scales, block_tables, context_lens, context, head_dim ** -0.5)


@dataclass
class PrefillProblem:
    q: torch.Tensor                  # [B, Hq, L, D] unpaged, for SDPA
    k: torch.Tensor                  # [B, Hkv, L, D]
    v: torch.Tensor
    query: torch.Tensor              # [B * L, Hq, D] varlen, for paged_prefill
    kv_cache: torch.Tensor
    block_tables: torch.Tensor
    query_start_loc: torch.Tensor    # int32 [B + 1]
    context_lens: torch.Tensor       # int32 [B]
    scale: float

    def causal_flops(self) -> float:
        """QK^T and PV over the causal pairs, as FLOP counts usually quote them: L * L / 2
        pairs for a prefill; for an extend (queries the last Q of L tokens), Q * (L - Q)
        + Q * Q / 2."""
        b, h, q_len, d = self.q.shape
        kv_len = self.k.shape[2]
        return 2 * 2 * b * h * d * (q_len * (kv_len - q_len) + q_len * q_len / 2)


def prefill_problem(batch: int, seq_len: int, num_heads: int, num_kv_heads: int, head_dim: int,
                    dtype: torch.dtype = torch.bfloat16, block_size: int = 16,
                    device: torch.device | str = "cuda", seed: int = 0) -> PrefillProblem:
    """The same causal prefill as unpaged [B, H, L, D] tensors and as a paged cache + varlen query."""
    gen = torch.Generator(device=device).manual_seed(seed)
    q = torch.randn((batch, num_heads, seq_len, head_dim), generator=gen, device=device, dtype=dtype)
    k = torch.randn((batch, num_kv_heads, seq_len, head_dim), generator=gen, device=device, dtype=dtype)
    v = torch.randn((batch, num_kv_heads, seq_len, head_dim), generator=gen, device=device, dtype=dtype)
    per_seq = math.ceil(seq_len / block_size)
    num_blocks = batch * per_seq
    block_tables = torch.randperm(num_blocks, generator=gen, device=device).view(batch, per_seq).to(torch.int32)
    kv_cache = torch.zeros((num_blocks, 2, block_size, num_kv_heads, head_dim), dtype=dtype, device=device)
    padded = per_seq * block_size
    for i, src in enumerate((k, v)):
        rows = torch.zeros((batch, padded, num_kv_heads, head_dim), dtype=dtype, device=device)
        rows[:, :seq_len] = src.transpose(1, 2)
        kv_cache[block_tables.long().flatten(), i] = rows.view(num_blocks, block_size, num_kv_heads, head_dim)
    query = q.transpose(1, 2).reshape(batch * seq_len, num_heads, head_dim).contiguous()
    starts = torch.arange(0, batch + 1, device=device, dtype=torch.int32) * seq_len
    lens = torch.full((batch,), seq_len, dtype=torch.int32, device=device)
    return PrefillProblem(q, k, v, query, kv_cache, block_tables, starts, lens, head_dim ** -0.5)


def extend_problem(batch: int, new_tokens: int, cached: int, num_heads: int, num_kv_heads: int,
                   head_dim: int, dtype: torch.dtype = torch.bfloat16, block_size: int = 16,
                   device: torch.device | str = "cuda", seed: int = 0) -> PrefillProblem:
    """`new_tokens` queries per sequence over `cached` tokens already in the cache (and
    their own): the prefill problem of cached + new tokens with only the last queries."""
    if new_tokens < 1 or cached < 0:
        raise ValueError(f"new_tokens must be >= 1 and cached >= 0, got {new_tokens}, {cached}")
    full = prefill_problem(batch, cached + new_tokens, num_heads, num_kv_heads, head_dim, dtype, block_size,
                           device, seed)
    q = full.q[:, :, cached:].contiguous()
    query = q.transpose(1, 2).reshape(batch * new_tokens, num_heads, head_dim).contiguous()
    starts = torch.arange(0, batch + 1, device=device, dtype=torch.int32) * new_tokens
    return replace(full, q=q, query=query, query_start_loc=starts)


@dataclass
class WriteProblem:
    key: torch.Tensor                # [T, Hkv, D]
    value: torch.Tensor
    kv_cache: torch.Tensor
    kv_scales: torch.Tensor | None
    slot_mapping: torch.Tensor       # int64 [T], a random permutation of blocks, in order inside a block

    def bytes_moved(self) -> int:
        read = 2 * self.key.numel() * self.key.element_size() + self.slot_mapping.numel() * self.slot_mapping.element_size()
        written = 2 * self.key.numel() * self.kv_cache.element_size()
        if self.kv_scales is not None:
            written += 2 * self.key.shape[0] * self.key.shape[1] * 4
        return read + written


def write_problem(num_tokens: int, num_kv_heads: int, head_dim: int, cache_dtype: torch.dtype = torch.bfloat16,
                  dtype: torch.dtype = torch.bfloat16, block_size: int = 16,
                  device: torch.device | str = "cuda", seed: int = 0) -> WriteProblem:
    """`num_tokens` new K/V rows written into a cache with exactly enough blocks."""
    gen = torch.Generator(device=device).manual_seed(seed)
    num_blocks = math.ceil(num_tokens / block_size)
    key = torch.randn((num_tokens, num_kv_heads, head_dim), generator=gen, device=device, dtype=dtype)
    value = torch.randn((num_tokens, num_kv_heads, head_dim), generator=gen, device=device, dtype=dtype)
    kv_cache = torch.zeros((num_blocks, 2, block_size, num_kv_heads, head_dim), dtype=cache_dtype, device=device)
    kv_scales = None
    if is_quantized(cache_dtype):
        kv_scales = torch.zeros(kv_cache.shape[:4], dtype=torch.float32, device=device)
    blocks = torch.randperm(num_blocks, generator=gen, device=device)
    slots = (blocks.unsqueeze(1) * block_size + torch.arange(block_size, device=device)).flatten()[:num_tokens]
    return WriteProblem(key, value, kv_cache, kv_scales, slots.to(torch.int64))
