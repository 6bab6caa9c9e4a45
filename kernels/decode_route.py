"""Which kernel runs a quantised paged decode: the register-only Gluon kernel or the Triton one.

`paged_decode(..., kernel=)` says what the caller asked for: "auto" (the default)
runs kernels/decode_quant_mma.py for an fp8/int8 cache wherever it can (1.24-1.42x
the Triton kernel's fp8/int8 decode on the H200, bench/README.md) and the Triton
kernel elsewhere; "triton" always the Triton kernel; "quant_mma" the Gluon kernel
or a ValueError saying why it cannot run the call. Both are held to the same
oracle at the same tolerances by the decode conformance, so "auto" choosing is a
routing rule, not a fallback. The Triton kernel's tuning knobs (block_n,
num_warps, num_stages, split_reduce="fused") tune only it: asking for one picks
it under "auto", and is an error with "quant_mma" (as paged_prefill's sm90 route).
Nothing here imports Gluon, so the route can be asked on any Triton.
"""
from __future__ import annotations

import torch

from kernels.pdl import capability

KERNELS = ("auto", "triton", "quant_mma")
QUANT_MMA_HEAD_DIM = 128            # kernels/decode_quant_mma.DIM
QUANT_MMA_MAX_GROUP = 16            # kernels/decode_quant_mma.MAX_GROUP: the mma's 16 rows
QUANT_MMA_CAPABILITY = (8, 9)       # the paired e4m3 -> f16x2 convert


def check_kernel(kernel: object) -> str:
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    return kernel


def quant_mma_refusal(query: torch.Tensor, kv_cache: torch.Tensor, triton_knobs: tuple[str, ...],
                      interpreting: bool) -> str | None:
    """Why the register-only kernel cannot run this (already validated) call, or None."""
    if kv_cache.dtype not in (torch.float8_e4m3fn, torch.int8):
        return f"it decodes fp8/int8 caches, not {kv_cache.dtype}"
    if triton_knobs:
        return f"{', '.join(triton_knobs)} tune the Triton kernel"
    if interpreting:
        return "the Triton interpreter runs Triton kernels only"
    if query.device.type != "cuda":
        return f"it needs a CUDA device, not {query.device.type}"
    cap = capability(query.device.index if query.device.index is not None else torch.cuda.current_device())
    if cap < QUANT_MMA_CAPABILITY:
        return f"it needs compute capability >= 8.9 (the paired fp8 convert), this device has {cap[0]}.{cap[1]}"
    if query.dtype not in (torch.bfloat16, torch.float16):
        return f"it takes bfloat16/float16 queries, not {query.dtype}"
    _, num_heads, head_dim = query.shape
    num_kv_heads = kv_cache.shape[3]
    if head_dim != QUANT_MMA_HEAD_DIM:
        return f"it takes head_dim {QUANT_MMA_HEAD_DIM}, not {head_dim}"
    if num_heads // num_kv_heads > QUANT_MMA_MAX_GROUP:
        return f"it takes a GQA group <= {QUANT_MMA_MAX_GROUP}, not {num_heads // num_kv_heads}"
    cs = kv_cache.stride()
    if any(s % 4 for s in cs[:4]) or kv_cache.data_ptr() % 16:
        return f"it reads the cache in 4-byte words from a 16-byte aligned base (strides {tuple(cs)})"
    return None


def use_quant_mma(kernel: str, query: torch.Tensor, kv_cache: torch.Tensor, triton_knobs: tuple[str, ...],
                  interpreting: bool) -> bool:
    """Whether to run the register-only kernel for `kernel` ("auto" / "triton" /
    "quant_mma"); "quant_mma" where it cannot run raises ValueError with the reason."""
    if kernel == "triton":
        return False
    refusal = quant_mma_refusal(query, kv_cache, triton_knobs, interpreting)
    if kernel == "quant_mma" and refusal is not None:
        raise ValueError(f"paged_decode kernel='quant_mma' cannot run this call: {refusal}")
    return refusal is None
