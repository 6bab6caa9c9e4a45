"""Argument checks shared by the launchers: each raises ValueError naming the argument."""
from __future__ import annotations

import math
from types import MappingProxyType

import torch

KV_CACHE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.int8)
QUERY_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
QUANTIZED_DTYPES = (torch.float8_e4m3fn, torch.int8)
_INT_OF_SIZE = MappingProxyType({1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64})


def check_tensor(name: str, t: object, ndim: int | None = None,
                 dtypes: tuple[torch.dtype, ...] | None = None,
                 device: torch.device | None = None) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise ValueError(f"{name} dtype {str(t.dtype).replace('torch.', '')} not supported (expected one of {names})")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device}, expected {device} (same device as the other arguments)")
    return t


def check_scale(scale: object) -> float:
    """The softmax scale: a finite positive Python number (a bool or tensor is a caller bug)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise ValueError(f"scale must be a Python float, got {type(scale).__name__}")
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be finite and > 0, got {scale}")
    return float(scale)


def check_device_runs_triton(name: str, t: torch.Tensor, launcher: str, interpreting: bool) -> None:
    """Compiled Triton needs CUDA tensors; CPU tensors only work under TRITON_INTERPRET=1."""
    if t.device.type != "cuda" and not interpreting:
        raise ValueError(f"{name} is on {t.device}; {launcher} needs a CUDA device (or TRITON_INTERPRET=1)")


def check_shape(name: str, t: torch.Tensor, expected: tuple[int, ...]) -> None:
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(expected)}")


def check_kv_cache(name: str, kv_cache: object, device: torch.device | None = None) -> torch.Tensor:
    """[num_blocks, 2, block_size, num_kv_heads, head_dim]; the last dim contiguous."""
    kv_cache = check_tensor(name, kv_cache, 5, KV_CACHE_DTYPES, device)
    if kv_cache.shape[1] != 2:
        raise ValueError(f"{name} dim 1 must be 2 (K, V), got shape {tuple(kv_cache.shape)}")
    if kv_cache.stride(-1) != 1:
        raise ValueError(f"{name} must be contiguous in head_dim (stride(-1) == 1)")
    return kv_cache


def check_kv_scales(kv_scales: object, kv_cache: torch.Tensor) -> torch.Tensor | None:
    """Scales exist exactly when the cache is quantised: float32 [num_blocks, 2, block_size, num_kv_heads]."""
    quantized = kv_cache.dtype in QUANTIZED_DTYPES
    if not quantized:
        if kv_scales is not None:
            raise ValueError(f"kv_scales given for a {kv_cache.dtype} cache; only int8/float8_e4m3fn caches take scales")
        return None
    if kv_scales is None:
        raise ValueError(f"kv_scales is required for a {kv_cache.dtype} cache")
    kv_scales = check_tensor("kv_scales", kv_scales, 4, (torch.float32,), kv_cache.device)
    check_shape("kv_scales", kv_scales, tuple(kv_cache.shape[:4]))
    return kv_scales


def check_heads(num_heads: int, num_kv_heads: int) -> None:
    if num_heads % num_kv_heads:
        raise ValueError(f"query heads ({num_heads}) must be a multiple of the cache's kv heads ({num_kv_heads})")


def check_block_tables(block_tables: object, num_seqs: int, num_blocks: int, context_lens: torch.Tensor,
                       block_size: int, device: torch.device) -> int:
    """int32 [num_seqs, max_blocks]; every block a sequence uses must lie in the cache.
    Returns the longest context. All the range facts come back in one host read
    (one device sync; an index check costs far less than a wild read)."""
    block_tables = check_tensor("block_tables", block_tables, 2, (torch.int32,), device)
    if block_tables.shape[0] != num_seqs:
        raise ValueError(f"block_tables has {block_tables.shape[0]} rows, expected {num_seqs} (one per sequence)")
    if num_seqs == 0:
        return 0
    lens = context_lens.long()
    blocks_used = (lens + block_size - 1) // block_size
    cols = torch.arange(block_tables.shape[1], device=device).unsqueeze(0)
    used = cols < blocks_used.unsqueeze(1)
    ids = block_tables.long()
    bad = used & ((ids < 0) | (ids >= num_blocks))
    # The first bad id in row-major order (or 0 when there is none): no data-dependent shapes.
    if ids.numel():
        first_bad = ids.flatten()[bad.flatten().long().argmax()]
    else:
        first_bad = lens.new_zeros(())
    min_len, max_len, max_blocks, any_bad, bad_id = torch.stack(
        [lens.min(), lens.max(), blocks_used.max(), bad.any().long(), first_bad]).tolist()
    if min_len < 0:
        raise ValueError("context_lens must be >= 0")
    if max_blocks > block_tables.shape[1]:
        raise ValueError(f"a context of {max_len} tokens needs {max_blocks} blocks "
                         f"but block_tables has only {block_tables.shape[1]} columns")
    if any_bad:
        raise ValueError(f"block_tables holds block id {bad_id} outside the cache's {num_blocks} blocks")
    return max_len



def bit_copy_dtype(name: str, t: torch.Tensor) -> torch.dtype:
    """The integer dtype of `t`'s element size, through which a bitwise copy moves
    it (NaN payloads and fp8 codes unchanged); ValueError naming `name` if none."""
    if t.element_size() not in _INT_OF_SIZE or t.is_complex():
        raise ValueError(f"{name} dtype {t.dtype} not supported")
    return _INT_OF_SIZE[t.element_size()]
