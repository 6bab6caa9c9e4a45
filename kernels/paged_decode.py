"""paged_decode: one query token per sequence over its paged KV context (launcher).

The kernels live in kernels/decode_kernels.py and the launch heuristic in
kernels/decode_splits.py. A sequence with context_len 0 gets an all-zero
output row (there is nothing to attend to; zeros keep a padded batch finite).
"""
from __future__ import annotations

import torch
import triton

from kernels.decode_kernels import decode_reduce_kernel, decode_split_kernel
from kernels.decode_splits import MAX_SPLITS, DecodeConfig, choose_decode_config
from kernels.pdl import use_pdl
from kernels.triton_compat import LOG2E, dot_in_fp32, is_interpreting
from kernels.validation import (QUANTIZED_DTYPES, QUERY_DTYPES, check_block_tables, check_device_runs_triton,
                                check_heads, check_kv_cache, check_kv_scales, check_scale, check_shape,
                                check_tensor)

MAX_HEAD_DIM = 256


def _check_args(query: torch.Tensor, kv_cache: torch.Tensor, block_tables: torch.Tensor,
                context_lens: torch.Tensor, kv_scales: torch.Tensor | None, out: torch.Tensor | None,
                max_context_len: int | None, check_indices: bool) -> int:
    """Validate everything before launch; returns the longest context."""
    query = check_tensor("query", query, 3, QUERY_DTYPES)
    device = query.device
    kv_cache = check_kv_cache("kv_cache", kv_cache, device)
    num_seqs, num_heads, head_dim = query.shape
    num_blocks, _, block_size, num_kv_heads, cache_head_dim = kv_cache.shape
    if cache_head_dim != head_dim:
        raise ValueError(f"kv_cache head_dim {cache_head_dim} differs from query head_dim {head_dim}")
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"head_dim {head_dim} not supported (1..{MAX_HEAD_DIM})")
    if query.stride(-1) != 1:
        raise ValueError("query must be contiguous in head_dim (stride(-1) == 1)")
    if kv_cache.dtype not in QUANTIZED_DTYPES and kv_cache.dtype != query.dtype:
        raise ValueError(f"kv_cache dtype {kv_cache.dtype} differs from query dtype {query.dtype} "
                         "(an unquantised cache holds the model dtype)")
    check_heads(num_heads, num_kv_heads)
    check_kv_scales(kv_scales, kv_cache)
    context_lens = check_tensor("context_lens", context_lens, 1, (torch.int32,), device)
    check_shape("context_lens", context_lens, (num_seqs,))
    if out is not None:
        check_tensor("out", out, 3, (query.dtype,), device)
        check_shape("out", out, tuple(query.shape))
        if out.stride(-1) != 1:
            raise ValueError("out must be contiguous in head_dim (stride(-1) == 1)")
    check_device_runs_triton("query", query, "paged_decode", is_interpreting())
    longest = None
    if check_indices:
        longest = check_block_tables(block_tables, num_seqs, num_blocks, context_lens, block_size, device)
    else:
        block_tables = check_tensor("block_tables", block_tables, 2, (torch.int32,), device)
        if block_tables.shape[0] != num_seqs:
            raise ValueError(f"block_tables has {block_tables.shape[0]} rows, expected {num_seqs}")
    if block_tables.stride(1) != 1:
        raise ValueError("block_tables must be contiguous along its columns (stride(1) == 1)")
    if longest is None and max_context_len is None:
        longest = int(context_lens.max()) if num_seqs else 0      # the one sync of an unchecked call
    if max_context_len is None:
        return longest
    if longest is not None and longest > max_context_len:
        raise ValueError(f"max_context_len {max_context_len} is shorter than a context of {longest} tokens")
    return max_context_len


def paged_decode(query: torch.Tensor, kv_cache: torch.Tensor, block_tables: torch.Tensor,
                 context_lens: torch.Tensor, scale: float, kv_scales: torch.Tensor | None = None,
                 out: torch.Tensor | None = None, *, num_splits: int | None = None,
                 block_n: int | None = None, num_warps: int | None = None, num_stages: int | None = None,
                 max_context_len: int | None = None, check_indices: bool = True,
                 pdl: bool | None = None) -> torch.Tensor:
    """Attention of query [B, Hq, D] (the last token of each sequence) over the
    paged context: kv_cache [num_blocks, 2, block_size, Hkv, D], int32
    block_tables [B, max_blocks], int32 context_lens [B]. Returns [B, Hq, D] in
    the query dtype (written into `out` when given). int8/fp8 caches need
    kv_scales [num_blocks, 2, block_size, Hkv].

    Keywords override the launch heuristic (kernels/decode_splits.py) for
    benchmarks and tests. `max_context_len` (>= every context) spares a device
    sync; `check_indices=False` also skips the block-table range checks, which
    sync, for CUDA-graph capture by a caller that guarantees them. `pdl` launches
    the split-K reduce with programmatic dependent launch (None: on sm_90+; see
    kernels/pdl.py).
    """
    scale = check_scale(scale)
    longest = _check_args(query, kv_cache, block_tables, context_lens, kv_scales, out,
                          max_context_len, check_indices)
    if out is None:
        out = torch.empty_like(query)
    num_seqs, num_heads, head_dim = query.shape
    if num_seqs == 0:
        return out
    num_kv_heads = kv_cache.shape[3]
    cfg = choose_decode_config(num_seqs, num_kv_heads, head_dim, kv_cache.element_size(), longest,
                               query.device, num_splits=num_splits, block_n=block_n,
                               num_warps=num_warps, num_stages=num_stages)
    _launch(query, kv_cache, block_tables, context_lens, scale, kv_scales, out, cfg,
            cfg.num_splits > 1 and use_pdl(query.device, pdl))
    return out


def _launch(query: torch.Tensor, kv_cache: torch.Tensor, block_tables: torch.Tensor,
            context_lens: torch.Tensor, scale: float, kv_scales: torch.Tensor | None,
            out: torch.Tensor, cfg: DecodeConfig, pdl: bool) -> None:
    num_seqs, num_heads, head_dim = query.shape
    num_kv_heads = kv_cache.shape[3]
    group = num_heads // num_kv_heads
    head_dim_pad = max(16, triton.next_power_of_2(head_dim))
    split = cfg.num_splits > 1
    quant = kv_scales is not None
    interpret = is_interpreting()
    if split and num_seqs * num_heads * cfg.num_splits * head_dim_pad >= 2**31:
        raise ValueError(f"num_splits {cfg.num_splits} too large: the partial results would need 64-bit offsets")
    if split:
        part_m = torch.empty((num_seqs, num_heads, cfg.num_splits), dtype=torch.float32, device=query.device)
        part_l = torch.empty_like(part_m)
        part_acc = torch.empty((num_seqs, num_heads, cfg.num_splits, head_dim_pad), dtype=torch.float32,
                               device=query.device)
    else:
        part_m = part_l = part_acc = out                # unused pointers
    p_strides = part_m.stride() if split else (0, 0, 0)
    s_strides = kv_scales.stride() if quant else (0, 0, 0, 0)
    decode_split_kernel[(num_seqs, num_kv_heads, cfg.num_splits)](
        query, kv_cache, kv_scales if quant else kv_cache, block_tables, context_lens, out,
        part_acc, part_m, part_l,
        scale * LOG2E, cfg.split_len,
        query.stride(0), query.stride(1), out.stride(0), out.stride(1),
        *kv_cache.stride()[:4], *s_strides,
        block_tables.stride(0), *p_strides,
        GROUP=group, GROUP_PAD=max(16, triton.next_power_of_2(group)),
        HEAD_DIM=head_dim, HEAD_DIM_PAD=head_dim_pad, BLOCK_SIZE=kv_cache.shape[2], BLOCK_N=cfg.block_n,
        QUANT=quant, QUANT_F16=quant and query.dtype != torch.float32, IS_INT8=kv_cache.dtype == torch.int8,
        SPLIT=split, DOT_FP32=dot_in_fp32(),
        DOT_PRECISION="ieee" if query.dtype == torch.float32 else "tf32", INTERPRET=interpret, PDL=pdl,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    if split:
        decode_reduce_kernel[(num_seqs, num_heads)](
            out, part_acc, part_m, part_l, context_lens, cfg.split_len, cfg.num_splits,
            out.stride(0), out.stride(1), *p_strides,
            HEAD_DIM=head_dim, HEAD_DIM_PAD=head_dim_pad, CHUNK=min(triton.next_power_of_2(cfg.num_splits), MAX_SPLITS),
            INTERPRET=interpret, PDL=pdl, num_warps=4 if head_dim_pad >= 128 else 2,
            **({"launch_pdl": True} if pdl else {}),
        )
