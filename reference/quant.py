"""Oracle for the quantised KV caches: one float32 scale per token and KV head.

The arithmetic the kernels must match (see kernels/README.md): scale =
max(amax|x|, 1e-6) / qmax, stored = x / scale rounded into the cache dtype.
"""
from __future__ import annotations

import torch

INT8_MAX = 127.0
FP8_E4M3_MAX = 448.0
MIN_AMAX = 1e-6


def qmax(cache_dtype: torch.dtype) -> float:
    if cache_dtype == torch.int8:
        return INT8_MAX
    if cache_dtype == torch.float8_e4m3fn:
        return FP8_E4M3_MAX
    raise ValueError(f"cache dtype {cache_dtype} is not a quantised KV dtype (int8 or float8_e4m3fn)")


def is_quantized(cache_dtype: torch.dtype) -> bool:
    return cache_dtype in (torch.int8, torch.float8_e4m3fn)


def quantize_rows(x: torch.Tensor, cache_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantise the last dim of `x`. Returns (values in cache_dtype, float32 scales of x.shape[:-1])."""
    x32 = x.float()
    amax = x32.abs().amax(dim=-1).clamp_min(MIN_AMAX)
    scale = amax / qmax(cache_dtype)
    scaled = x32 / scale.unsqueeze(-1)
    if cache_dtype == torch.int8:
        q = torch.round(scaled).clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
    else:
        q = scaled.clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(torch.float8_e4m3fn)
    return q, scale


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """float64 values of a quantised tensor and its per-row scales."""
    return q.to(torch.float64) * scale.to(torch.float64).unsqueeze(-1)
