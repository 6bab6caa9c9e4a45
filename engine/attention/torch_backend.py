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

from dataclasses import dataclass

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

    def __init__(self) -> None:
        self._plan: _DecodePlan | None = None     # this step's decode plan (see _decode_plan)
        self._writes: _WritePlan | None = None    # this step's cache rows (see _write_plan)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                kv_cache: torch.Tensor, kv_scales: torch.Tensor | None,
                metadata: AttentionMetadata, scale: float) -> torch.Tensor:
        quantized = kv_cache.dtype in _QMAX
        if quantized and kv_scales is None:
            raise ValueError(f"kv_scales is required for a {kv_cache.dtype} kv_cache")
        if query.shape[1] % kv_cache.shape[3]:
            raise ValueError(f"query heads {query.shape[1]} are not a multiple of the "
                             f"kv_cache's {kv_cache.shape[3]} KV heads")
        scales = kv_scales if quantized else None
        self._write(key, value, kv_cache, scales, metadata)
        nd = metadata.num_decodes
        if nd == metadata.num_seqs:             # decode-only step: no output buffer to copy into
            return self._decodes(query, kv_cache, scales, metadata, scale)
        out = query.new_empty(query.shape)
        if nd:
            out[:nd] = self._decodes(query[:nd], kv_cache, scales, metadata, scale)
        start = nd
        for i in range(nd, metadata.num_seqs):
            q_len = metadata.query_lens[i]
            ctx = metadata.context_lens_host[i]
            q = query[start:start + q_len].transpose(0, 1)            # [Hq, q, D]
            if q_len == ctx and not quantized and kv_cache.dtype == query.dtype:
                # A whole prompt: its context is exactly the rows just written.
                k, v = key[start:start + q_len], value[start:start + q_len]
            else:
                k, v = self._gather(kv_cache, scales, metadata.block_tables[i:i + 1], ctx, query.dtype)
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

    def _write_plan(self, metadata: AttentionMetadata, block_size: int) -> _WritePlan:
        """The step's cache rows to write, computed by the first layer and shared by all."""
        plan = self._writes
        if plan is not None and plan.metadata is metadata and plan.block_size == block_size:
            return plan
        slots = metadata.slot_mapping
        keep = None
        if bool((slots < 0).any()):                # padding tokens (slot -1) are not written
            keep = slots >= 0
            slots = slots[keep]
        blocks, offsets = slots // block_size, slots % block_size
        # Row of (block, K/V, offset) in the cache seen as [num_blocks * 2 * block_size, Hkv, D].
        k_rows = blocks * (2 * block_size) + offsets
        self._writes = _WritePlan(metadata, block_size, keep, blocks, offsets, k_rows, k_rows + block_size)
        return self._writes

    def _write(self, key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor,
               kv_scales: torch.Tensor | None, metadata: AttentionMetadata) -> None:
        num_blocks, _, block_size = kv_cache.shape[:3]
        plan = self._write_plan(metadata, block_size)
        if plan.keep is not None:
            key, value = key[plan.keep], value[plan.keep]
        blocks, offsets = plan.blocks, plan.offsets
        if kv_scales is None and kv_cache.is_contiguous():
            # index_copy_ is several times cheaper than a 3-index index_put_.
            rows = kv_cache.view(num_blocks * 2 * block_size, *kv_cache.shape[3:])
            rows.index_copy_(0, plan.k_rows, key.to(kv_cache.dtype))
            rows.index_copy_(0, plan.v_rows, value.to(kv_cache.dtype))
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
        block_size, hkv, d = kv_cache.shape[2:]
        n = tables.shape[0]
        idx = tables[:, :-(-max_ctx // block_size)].reshape(-1).long()
        k, v = TorchBackend._gather_flat(kv_cache, kv_scales, idx, n, dtype)
        return k.view(n, -1, hkv, d), v.view(n, -1, hkv, d)

    def _decode_plan(self, metadata: AttentionMetadata, hkv: int, group: int,
                     query: torch.Tensor) -> _DecodePlan:
        """What every layer's decode attention shares in one step, built by the first layer."""
        plan = self._plan
        key = (hkv, group, query.dtype)
        if plan is not None and plan.metadata is metadata and plan.key == key:
            return plan
        device = query.device
        nd = metadata.num_decodes
        lens = metadata.context_lens_host[:nd]
        block_size = metadata.block_size
        width = -(-max(lens) // block_size)
        padded_ctx = width * block_size
        idx = metadata.block_tables[:nd, :width].reshape(-1).long()
        # Row (n, slot, head') of a sequence's flat K is visible to query head (h, g) of that
        # sequence iff head' == h and slot < its context: an additive 0 / -inf bias.
        slot = torch.arange(padded_ctx, device=device)
        live = slot.unsqueeze(0) < metadata.context_lens[:nd].unsqueeze(1)                  # [nd, c]
        heads = torch.arange(hkv, device=device)
        same = heads.view(hkv, 1, 1, 1) == heads.view(1, 1, 1, hkv)                          # [h, 1, 1, h']
        seen = live.view(nd, 1, 1, padded_ctx, 1) & same.unsqueeze(0)                       # [nd, h, 1, c, h']
        bias = torch.zeros(seen.shape, dtype=query.dtype, device=device).masked_fill_(~seen, float("-inf"))
        bias = bias.expand(nd, hkv, group, padded_ctx, hkv).reshape(nd, hkv * group, padded_ctx * hkv)
        # Flat rows (n, slot) past a context: zeroed in K and V (a slot may hold NaN, which an
        # additive bias keeps and 0 * NaN is NaN).
        dead = (~live).reshape(-1).nonzero().squeeze(1) if min(lens) < padded_ctx else None
        self._plan = _DecodePlan(metadata, key, idx, bias, dead)
        return self._plan

    def _decodes(self, query: torch.Tensor, kv_cache: torch.Tensor, kv_scales: torch.Tensor | None,
                 metadata: AttentionMetadata, scale: float) -> torch.Tensor:
        """All decodes in one batched attention with no K/V transposes: each sequence's
        gathered K is one [context * Hkv, D] matrix, so the scores of all its query heads
        against all its rows are one matmul, and a bias keeps each query head to its own
        KV head's rows and to the live slots (HF's head h reads KV head h // group). The
        cross-head products are wasted work, cheap at decode sizes; what it saves is the
        copy of K and V into head-major order that the per-head matmuls needed."""
        nd, hq, d = query.shape
        hkv = kv_cache.shape[3]
        plan = self._decode_plan(metadata, hkv, hq // hkv, query)
        k, v = self._gather_flat(kv_cache, kv_scales, plan.idx, nd, query.dtype)   # [nd, c * Hkv, D]
        if plan.dead_rows is not None:       # finite everywhere: a bias cannot mask a NaN score
            k.view(-1, hkv, d).index_fill_(0, plan.dead_rows, 0)
            v.view(-1, hkv, d).index_fill_(0, plan.dead_rows, 0)
        scores = torch.baddbmm(plan.bias, query * scale, k.transpose(1, 2))           # [nd, Hq, c * Hkv]
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
        return torch.bmm(probs, v)                                                 # [nd, Hq, D]

    @staticmethod
    def _gather_flat(kv_cache: torch.Tensor, kv_scales: torch.Tensor | None, idx: torch.Tensor, n: int,
                     dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V [n, padded_ctx * Hkv, D] in `dtype` through the block ids `idx` (n rows of
        blocks); `kv_scales` (quantised caches only) dequantise them."""
        out = []
        for which in (0, 1):
            rows = kv_cache[:, which].index_select(0, idx)           # [n * width, bs, Hkv, D]
            if kv_scales is not None:
                rows = rows.float() * kv_scales[:, which].index_select(0, idx).unsqueeze(-1)
            out.append(rows.to(dtype).view(n, -1, rows.shape[-1]))
        return out[0], out[1]


@dataclass(frozen=True)
class _DecodePlan:
    metadata: AttentionMetadata      # the step it belongs to (identity)
    key: tuple                       # (Hkv, group, query dtype)
    idx: torch.Tensor                # int64 [nd * width]: the blocks to gather
    bias: torch.Tensor               # query dtype [nd, Hq, padded_ctx * Hkv]: 0 visible, -inf not
    dead_rows: torch.Tensor | None   # flat (n, slot) rows past each context, or None


@dataclass(frozen=True)
class _WritePlan:
    metadata: AttentionMetadata      # the step it belongs to (identity)
    block_size: int
    keep: torch.Tensor | None        # bool [num_tokens]: tokens with a slot, None when all have one
    blocks: torch.Tensor             # block and offset of each kept token's slot
    offsets: torch.Tensor
    k_rows: torch.Tensor             # its K and V rows in the cache seen as [blocks * 2 * bs, Hkv, D]
    v_rows: torch.Tensor
