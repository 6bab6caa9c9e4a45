"""The torch attention backend: index writes into the paged cache, then
`scaled_dot_product_attention` over each sequence's gathered context.

Runs anywhere torch runs (the CPU engine, and CUDA for tests). The decodes of a
step share one SDPA call over their contexts padded to the longest (a mask
hides the padding); each prefill chunk gets its own call with the causal offset
(queries are the last query_len tokens of the context, docs/architecture.md).
Quantised caches (int8, fp8 e4m3) keep one float32 scale per token and KV head
with the arithmetic of kernels/README.md ("Quantised caches").
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.attention.backend import AttentionBackend
from engine.attention.metadata import AttentionMetadata

_QMAX = {torch.int8: 127.0, torch.float8_e4m3fn: 448.0}
_MIN_AMAX = 1e-6


def _quantize(x: torch.Tensor, cache_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of x (last dim) in cache_dtype with one float32 scale per row."""
    qmax = _QMAX[cache_dtype]
    x32 = x.float()
    scale = x32.abs().amax(dim=-1).clamp_min(_MIN_AMAX) / qmax
    scaled = x32 / scale.unsqueeze(-1)
    if cache_dtype == torch.int8:
        return torch.round(scaled).clamp(-qmax, qmax).to(torch.int8), scale
    return scaled.clamp(-qmax, qmax).to(cache_dtype), scale


class TorchBackend(AttentionBackend):
    name = "torch"

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                kv_cache: torch.Tensor, kv_scales: torch.Tensor | None,
                metadata: AttentionMetadata, scale: float) -> torch.Tensor:
        quantized = kv_cache.dtype in _QMAX
        if quantized and kv_scales is None:
            raise ValueError(f"kv_scales is required for a {kv_cache.dtype} kv_cache")
        if query.shape[1] % kv_cache.shape[3]:
            raise ValueError(f"query heads {query.shape[1]} are not a multiple of the "
                             f"kv_cache's {kv_cache.shape[3]} KV heads")
        self._write(key, value, kv_cache, kv_scales if quantized else None, metadata)
        out = query.new_empty(query.shape)
        nd = metadata.num_decodes
        if nd:
            out[:nd] = self._decodes(query[:nd], kv_cache, kv_scales, metadata, scale)
        start = nd
        for i in range(nd, metadata.num_seqs):
            q_len = metadata.query_lens[i]
            ctx = metadata.context_lens_host[i]
            q = query[start:start + q_len].transpose(0, 1)            # [Hq, q, D]
            if q_len == ctx and not quantized and kv_cache.dtype == query.dtype:
                # A whole prompt: its context is exactly the rows just written.
                k, v = key[start:start + q_len], value[start:start + q_len]
            else:
                k, v = self._gather(kv_cache, kv_scales, metadata.block_tables[i:i + 1], ctx, query.dtype)
                k, v = k[0, :ctx], v[0, :ctx]
            k, v = k.transpose(0, 1), v.transpose(0, 1)                    # [Hkv, c, D]
            mask = None
            if 1 < q_len < ctx:
                rows = torch.arange(q_len, device=query.device).unsqueeze(1)
                cols = torch.arange(ctx, device=query.device).unsqueeze(0)
                mask = cols <= rows + (ctx - q_len)
            res = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=1 < q_len == ctx, scale=scale, enable_gqa=True)
            out[start:start + q_len] = res.transpose(0, 1)
            start += q_len
        return out

    @staticmethod
    def _write(key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor,
               kv_scales: torch.Tensor | None, metadata: AttentionMetadata) -> None:
        slots = metadata.slot_mapping
        if bool((slots < 0).any()):                # padding tokens (slot -1) are not written
            keep = slots >= 0
            slots, key, value = slots[keep], key[keep], value[keep]
        num_blocks, _, block_size = kv_cache.shape[:3]
        blocks, offsets = slots // block_size, slots % block_size
        if kv_scales is None and kv_cache.is_contiguous():
            # Row of (block, K/V, offset) in the cache seen as [num_blocks * 2 * block_size, Hkv, D]:
            # index_copy_ is several times cheaper than a 3-index index_put_.
            rows = kv_cache.view(num_blocks * 2 * block_size, *kv_cache.shape[3:])
            k_rows = blocks * (2 * block_size) + offsets
            rows.index_copy_(0, k_rows, key.to(kv_cache.dtype))
            rows.index_copy_(0, k_rows + block_size, value.to(kv_cache.dtype))
            return
        for which, rows in ((0, key), (1, value)):
            if kv_scales is not None:
                rows, row_scales = _quantize(rows, kv_cache.dtype)
                kv_scales[blocks, which, offsets] = row_scales
            kv_cache[blocks, which, offsets] = rows.to(kv_cache.dtype)

    @staticmethod
    def _gather(kv_cache: torch.Tensor, kv_scales: torch.Tensor | None, tables: torch.Tensor,
                max_ctx: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V [n, padded_ctx, Hkv, D] in `dtype` of the sequences whose block
        tables are `tables`, through their first ceil(max_ctx / block_size) blocks."""
        block_size = kv_cache.shape[2]
        idx = tables[:, :-(-max_ctx // block_size)].reshape(-1).long()
        n = tables.shape[0]
        out = []
        for which in (0, 1):
            rows = kv_cache[:, which].index_select(0, idx)           # [n * width, bs, Hkv, D]
            if kv_scales is not None and kv_cache.dtype in _QMAX:
                rows = rows.float() * kv_scales[:, which].index_select(0, idx).unsqueeze(-1)
            out.append(rows.to(dtype).view(n, -1, *rows.shape[2:]))
        return out[0], out[1]

    def _decodes(self, query: torch.Tensor, kv_cache: torch.Tensor, kv_scales: torch.Tensor | None,
                 metadata: AttentionMetadata, scale: float) -> torch.Tensor:
        """All decodes in one batched attention: contexts padded to the longest, the padding
        zeroed (a slot may hold NaN; 0 probability times NaN is still NaN) and masked."""
        nd = metadata.num_decodes
        max_ctx = max(metadata.context_lens_host[:nd])
        k, v = self._gather(kv_cache, kv_scales, metadata.block_tables[:nd], max_ctx, query.dtype)
        k, v = k[:, :max_ctx], v[:, :max_ctx]
        mask = None
        if min(metadata.context_lens_host[:nd]) < max_ctx:
            cols = torch.arange(max_ctx, device=query.device)
            valid = cols.unsqueeze(0) < metadata.context_lens[:nd].unsqueeze(1)   # [nd, c]
            k.masked_fill_(~valid[:, :, None, None], 0)        # in place: the gather's own copy
            v.masked_fill_(~valid[:, :, None, None], 0)
            mask = valid[:, None, None, :]
        # GQA without repeating K/V: the `group` query heads of a KV head are that
        # head's `group` query rows (HF's head h reads KV head h // group).
        nd, hq, d = query.shape
        hkv = k.shape[2]
        # Two batched matmuls rather than SDPA: on these CPUs SDPA's flash kernel
        # spent ~6 ms on a one-token query (torch 2.13, 2-core machine), more than
        # the layer's projections.
        q = query.view(nd, hkv, hq // hkv, d)
        scores = torch.matmul(q, k.permute(0, 2, 3, 1)).mul_(scale)            # [nd, Hkv, group, c]
        if mask is not None:
            scores.masked_fill_(~mask, float("-inf"))
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
        res = torch.matmul(probs, v.permute(0, 2, 1, 3))                        # [nd, Hkv, group, D]
        return res.reshape(nd, hq, d)
