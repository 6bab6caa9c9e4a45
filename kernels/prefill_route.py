"""Which kernel runs a paged prefill: the sm_90 Gluon kernel or the portable Triton one.

`PrefillConfig.kernel` says what the caller asked for: "auto" (the default) runs
kernels/prefill_sm90.py wherever it can (it is 1.2-1.3x the Triton kernel on the
H200, bench/README.md) and the Triton kernel elsewhere; "triton" always the
Triton kernel; "sm90" the Gluon kernel or a ValueError saying why it cannot run
the call. The two kernels compute the same thing (the GPU conformance holds both
to the oracle), so "auto" choosing is a routing rule, not a fallback: nothing
is tried and retried.
"""
from __future__ import annotations

import torch

from kernels.pdl import capability as _capability

KERNELS = ("auto", "triton", "sm90")
SM90_HEAD_DIMS = (64, 128)
SM90_BLOCK_M = 128          # kernels/prefill_sm90_launch.BLOCK_M: the tile map must be built for it
_MAX_ROWS = 2**31           # TMA row coordinates are int32


def sm90_refusal(query: torch.Tensor, kv_cache: torch.Tensor, quantized: bool, block_m: int,
                 interpreting: bool) -> str | None:
    """Why the sm_90 kernel cannot run this (already validated) call, or None when it can."""
    if interpreting:
        return "the Triton interpreter runs Triton kernels only"
    if query.device.type != "cuda":
        return f"it needs a CUDA device, not {query.device.type}"
    index = query.device.index if query.device.index is not None else torch.cuda.current_device()
    cap = _capability(index)
    if cap != (9, 0):
        return f"it needs compute capability 9.0 (Hopper), this device has {cap[0]}.{cap[1]}"
    if quantized:
        return "quantised (fp8/int8) caches go to the Triton kernel"
    if query.dtype not in (torch.bfloat16, torch.float16):
        return f"it takes bfloat16/float16 queries, not {query.dtype}"
    num_blocks, _, page, num_kv_heads, head_dim = kv_cache.shape
    if head_dim not in SM90_HEAD_DIMS:
        return f"it takes head_dim {SM90_HEAD_DIMS}, not {head_dim}"
    if page < 16:
        return f"it takes a block size >= 16, not {page}"
    if block_m != SM90_BLOCK_M:
        return f"it tiles {SM90_BLOCK_M} query rows and the plan's block_m is {block_m}"
    qs, cs = query.stride(), kv_cache.stride()
    if qs[2] != 1 or qs[1] != head_dim:
        return f"its TMA reads need the query's heads contiguous (strides {tuple(qs)})"
    if cs[4] != 1 or cs[3] != head_dim or cs[1] != page * cs[2] or cs[0] != 2 * cs[1]:
        return f"its TMA reads need the cache's slot rows uniformly strided (strides {tuple(cs)})"
    size = query.element_size()
    if query.data_ptr() % 16 or kv_cache.data_ptr() % 16 or (qs[0] * size) % 16 or (cs[2] * size) % 16:
        return "its TMA reads need 16-byte aligned query and cache rows"
    if num_blocks * 2 * page >= _MAX_ROWS:
        return f"its row coordinates are int32 and the cache has {num_blocks * 2 * page} rows"
    return None


def use_sm90(kernel: str, query: torch.Tensor, kv_cache: torch.Tensor, quantized: bool, block_m: int,
             interpreting: bool) -> bool:
    """Whether to run the sm_90 kernel for `kernel` ("auto" / "triton" / "sm90");
    "sm90" where it cannot run raises ValueError with the reason."""
    if kernel == "triton":
        return False
    refusal = sm90_refusal(query, kv_cache, quantized, block_m, interpreting)
    if kernel == "sm90" and refusal is not None:
        raise ValueError(f"paged_prefill kernel='sm90' cannot run this call: {refusal}")
    return refusal is None
