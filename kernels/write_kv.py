"""write_kv: scatter new K/V rows into their cache slots, quantising for int8/fp8 caches.

One program per token writes all of its KV heads (a [Hkv, head_dim] tile for K
and one for V), so a token's bytes go out as a few long contiguous runs. Slot
-1 is padding and skipped. Quantisation follows reference/quant.py bit for bit:
scale = max(amax|row|, 1e-6) / qmax per token and KV head, divisions rounded
to nearest (div_rn), int8 rounded half to even like torch.round.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.launch import Kernel, launch, next_pow2
from kernels.triton_compat import is_interpreting, round_half_even, to_fp8e4m3
from kernels.validation import (QUANTIZED_DTYPES, QUERY_DTYPES, check_device_runs_triton, check_kv_cache,
                                check_kv_scales, check_shape, check_tensor)

# Compiled Triton reads only constexpr globals inside @jit functions.
_INT8_MAX = tl.constexpr(127.0)
_FP8_MAX = tl.constexpr(448.0)
_MIN_AMAX = tl.constexpr(1e-6)


@triton.jit
def _write_kv_kernel(
    key_ptr, value_ptr, cache_ptr, scales_ptr, slot_ptr,
    stride_kt, stride_kh, stride_vt, stride_vh,
    stride_cb, stride_ckv, stride_cs, stride_ch,
    stride_sb, stride_skv, stride_ss, stride_sh,
    NUM_KV_HEADS: tl.constexpr, HEADS_PAD: tl.constexpr,
    HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    QUANT: tl.constexpr, IS_INT8: tl.constexpr, INTERPRET: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)          # t * stride_kt may pass 2**31 for huge batches
    slot = tl.load(slot_ptr + t).to(tl.int64)
    h = tl.arange(0, HEADS_PAD)
    d = tl.arange(0, HEAD_DIM_PAD)
    # A skipped slot (-1) masks every head; no scalar-bool broadcast, which the interpreter mishandles.
    h_mask = h < tl.where(slot >= 0, NUM_KV_HEADS, 0)
    mask = h_mask[:, None] & (d[None, :] < HEAD_DIM)
    block = slot // BLOCK_SIZE
    offset = slot % BLOCK_SIZE
    dst = cache_ptr + block * stride_cb + offset * stride_cs + h[:, None] * stride_ch + d[None, :]
    k = tl.load(key_ptr + t * stride_kt + h[:, None] * stride_kh + d[None, :], mask=mask, other=0.0)
    v = tl.load(value_ptr + t * stride_vt + h[:, None] * stride_vh + d[None, :], mask=mask, other=0.0)
    if QUANT:
        s_dst = scales_ptr + block * stride_sb + offset * stride_ss + h * stride_sh
        for which in tl.static_range(2):
            if which == 0:
                x = k.to(tl.float32)
            else:
                x = v.to(tl.float32)
            amax = tl.maximum(tl.max(tl.abs(x), axis=1), _MIN_AMAX)
            if IS_INT8:
                scale = tl.math.div_rn(amax, tl.full(amax.shape, _INT8_MAX, tl.float32))
                y = tl.math.div_rn(x, scale[:, None])
                y = tl.minimum(tl.maximum(round_half_even(y, INTERPRET), -_INT8_MAX), _INT8_MAX)
                q = y.to(tl.int8)
            else:
                scale = tl.math.div_rn(amax, tl.full(amax.shape, _FP8_MAX, tl.float32))
                y = tl.math.div_rn(x, scale[:, None])
                q = to_fp8e4m3(tl.minimum(tl.maximum(y, -_FP8_MAX), _FP8_MAX), INTERPRET)
            tl.store(dst + which * stride_ckv, q, mask=mask)
            tl.store(s_dst + which * stride_skv, scale, mask=h_mask)
    else:
        tl.store(dst, k, mask=mask)
        tl.store(dst + stride_ckv, v, mask=mask)


_KERNEL = Kernel(_write_kv_kernel, "NUM_KV_HEADS", "HEADS_PAD", "HEAD_DIM", "HEAD_DIM_PAD", "BLOCK_SIZE", "QUANT",
                 "IS_INT8", "INTERPRET")


def _check_slots(slot_mapping: torch.Tensor, num_slots: int) -> None:
    """Every slot is -1 (skip) or inside the cache. One device sync."""
    lo, hi = torch.stack(torch.aminmax(slot_mapping)).tolist()
    if lo < -1 or hi >= num_slots:
        bad = lo if lo < -1 else hi
        raise ValueError(f"slot_mapping holds slot {bad} outside the cache's {num_slots} slots "
                         f"(valid: -1 to skip, or 0..{num_slots - 1})")


def write_kv(key: torch.Tensor, value: torch.Tensor, kv_cache: torch.Tensor, slot_mapping: torch.Tensor,
             kv_scales: torch.Tensor | None = None, *, check_indices: bool = True) -> None:
    """Write key/value [num_tokens, Hkv, head_dim] into the slots of kv_cache
    [num_blocks, 2, block_size, Hkv, head_dim]; slot -1 skips a token.

    For an int8 or float8_e4m3fn cache the rows are quantised and their float32
    scales stored in kv_scales [num_blocks, 2, block_size, Hkv] (kernels/README.md).
    `check_indices=False` skips the slot range check, the one check that syncs
    with the device (for CUDA-graph capture by a caller that guarantees it).
    """
    key = check_tensor("key", key, 3, QUERY_DTYPES)
    device = key.device
    value = check_tensor("value", value, 3, QUERY_DTYPES, device)
    check_shape("value", value, tuple(key.shape))
    if value.dtype != key.dtype:
        raise ValueError(f"value dtype {value.dtype} differs from key dtype {key.dtype}")
    if key.stride(-1) != 1 or value.stride(-1) != 1:
        raise ValueError("key and value must be contiguous in head_dim (stride(-1) == 1)")
    kv_cache = check_kv_cache("kv_cache", kv_cache, device)
    num_tokens, num_kv_heads, head_dim = key.shape
    if tuple(kv_cache.shape[3:]) != (num_kv_heads, head_dim):
        raise ValueError(f"kv_cache has {tuple(kv_cache.shape[3:])} (kv heads, head_dim), "
                         f"key has {(num_kv_heads, head_dim)}")
    quant = kv_cache.dtype in QUANTIZED_DTYPES
    if not quant and kv_cache.dtype != key.dtype:
        raise ValueError(f"kv_cache dtype {kv_cache.dtype} differs from key dtype {key.dtype} "
                         "(an unquantised cache holds the model dtype)")
    kv_scales = check_kv_scales(kv_scales, kv_cache)
    slot_mapping = check_tensor("slot_mapping", slot_mapping, 1, (torch.int32, torch.int64), device)
    check_shape("slot_mapping", slot_mapping, (num_tokens,))
    interpreting = is_interpreting()
    check_device_runs_triton("key", key, "write_kv", interpreting)
    if num_tokens == 0:
        return
    num_blocks, _, block_size = kv_cache.shape[:3]
    if check_indices:
        _check_slots(slot_mapping, num_blocks * block_size)
    s_strides = kv_scales.stride() if quant else (0, 0, 0, 0)
    heads_pad, dim_pad = next_pow2(num_kv_heads), next_pow2(head_dim)
    tile = heads_pad * dim_pad
    k_strides, v_strides = key.stride(), value.stride()
    launch(_KERNEL, (num_tokens, 1, 1),
           (key, value, kv_cache, kv_scales if quant else kv_cache, slot_mapping),   # a dummy scales pointer when unused
           (k_strides[0], k_strides[1], v_strides[0], v_strides[1], *kv_cache.stride()[:4], *s_strides),
           (num_kv_heads, heads_pad, head_dim, dim_pad, block_size, quant, kv_cache.dtype == torch.int8, interpreting),
           (("num_warps", 8 if tile >= 4096 else 4 if tile >= 1024 else 2),))
