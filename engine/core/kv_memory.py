"""The engine's KV-cache memory math: cache sizing and `pagedlm memory`. No torch.

Sizes follow the cache layout the kernels read (docs/architecture.md, "KV cache
contract"): per layer a value tensor [num_blocks, 2, block_size, num_kv_heads,
head_dim] of `dtype_bytes` each and, for int8/fp8 caches, a float32 scale tensor
[num_blocks, 2, block_size, num_kv_heads]. So every byte count here is the
product of those shapes; `reference/memory.py` states the same math as textbook
closed forms, and conformance holds this module (and the CLI) to it.

Integers only (utilization is an exact Fraction), so no size is off by a
rounding error.
"""
from __future__ import annotations

from fractions import Fraction
from math import prod
from types import MappingProxyType
from typing import Mapping, Union

# Bytes per element of each model / KV-cache dtype name.
ELEMENT_BYTES: Mapping[str, int] = MappingProxyType({
    "float32": 4, "float16": 2, "bfloat16": 2, "fp8": 1, "int8": 1})
# int8 and fp8 caches carry one float32 scale per token, KV head and K/V.
_SCALE_BYTES: Mapping[str, int] = MappingProxyType({"fp8": 4, "int8": 4})

Ratio = Union[int, float, Fraction, str]


def _count(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def cdiv(a: int, b: int) -> int:
    """Ceiling of a / b for a >= 0, b > 0 (blocks that hold a tokens of b per block)."""
    return (a + b - 1) // b


def dtype_bytes(dtype: str) -> int:
    """Bytes of one element of `dtype` (a name in ELEMENT_BYTES)."""
    size = ELEMENT_BYTES.get(dtype)
    if size is None:
        raise ValueError(f"dtype must be one of {', '.join(ELEMENT_BYTES)}, got {dtype!r}")
    return size


def scale_bytes(kv_dtype: str) -> int:
    """Scale bytes per token, KV head and K/V of a `kv_dtype` cache (4 quantised, else 0)."""
    dtype_bytes(kv_dtype)
    return _SCALE_BYTES.get(kv_dtype, 0)


def kv_cache_shape(num_blocks: int, block_size: int, num_kv_heads: int,
                   head_dim: int) -> tuple[int, int, int, int, int]:
    """Shape of one layer's cache tensor (dim 1: 0 = K, 1 = V)."""
    return (num_blocks, 2, block_size, num_kv_heads, head_dim)


def kv_scale_shape(num_blocks: int, block_size: int, num_kv_heads: int) -> tuple[int, int, int, int]:
    """Shape of one layer's float32 scale tensor of an int8/fp8 cache."""
    return (num_blocks, 2, block_size, num_kv_heads)


def kv_cache_bytes(num_blocks: int, block_size: int, num_layers: int, num_kv_heads: int,
                   head_dim: int, dtype_bytes: int, scale_bytes: int = 0) -> int:
    """Bytes of the whole cache: every layer's value tensor plus its scales."""
    _count("num_blocks", num_blocks, 0)
    for name, value in (("block_size", block_size), ("num_layers", num_layers),
                        ("num_kv_heads", num_kv_heads), ("head_dim", head_dim),
                        ("dtype_bytes", dtype_bytes)):
        _count(name, value, 1)
    _count("scale_bytes", scale_bytes, 0)
    values = prod(kv_cache_shape(num_blocks, block_size, num_kv_heads, head_dim)) * dtype_bytes
    scales = prod(kv_scale_shape(num_blocks, block_size, num_kv_heads)) * scale_bytes
    return num_layers * (values + scales)


def block_bytes(block_size: int, num_layers: int, num_kv_heads: int, head_dim: int,
                dtype_bytes: int, scale_bytes: int = 0) -> int:
    """Bytes of one block across all layers."""
    return kv_cache_bytes(1, block_size, num_layers, num_kv_heads, head_dim,
                          dtype_bytes, scale_bytes)


def token_bytes(num_layers: int, num_kv_heads: int, head_dim: int, dtype_bytes: int,
                scale_bytes: int = 0) -> int:
    """Bytes one token's K and V take across all layers (a block of one slot)."""
    return block_bytes(1, num_layers, num_kv_heads, head_dim, dtype_bytes, scale_bytes)


def num_blocks_for_budget(budget_bytes: int, block_size: int, num_layers: int,
                          num_kv_heads: int, head_dim: int, dtype_bytes: int,
                          scale_bytes: int = 0) -> int:
    """Whole blocks a budget of `budget_bytes` holds."""
    _count("budget_bytes", budget_bytes, 0)
    return budget_bytes // block_bytes(block_size, num_layers, num_kv_heads, head_dim,
                                       dtype_bytes, scale_bytes)


def token_capacity(num_blocks: int, block_size: int) -> int:
    """Token slots in `num_blocks` blocks."""
    return _count("num_blocks", num_blocks, 0) * _count("block_size", block_size, 1)


def blocks_for_tokens(num_tokens: int, block_size: int) -> int:
    """Blocks a sequence of `num_tokens` tokens occupies."""
    return cdiv(_count("num_tokens", num_tokens, 0), _count("block_size", block_size, 1))


def last_block_waste(num_tokens: int, block_size: int) -> int:
    """Empty slots of the last block (0 when the tokens fill whole blocks)."""
    _count("num_tokens", num_tokens, 0)
    return -num_tokens % _count("block_size", block_size, 1)


def as_fraction(name: str, value: Ratio) -> Fraction:
    """An exact ratio: a float is read from its decimal form (0.9 is 9/10)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        return Fraction(str(value)) if isinstance(value, float) else Fraction(value)
    except (ValueError, TypeError, ZeroDivisionError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None


def usable_bytes(device_bytes: int, utilization: Ratio = 1) -> int:
    """The share of a device the engine may use, rounded down to a byte."""
    _count("device_bytes", device_bytes, 1)
    share = as_fraction("utilization", utilization)
    if not 0 < share <= 1:
        raise ValueError(f"utilization must be in (0, 1], got {float(share):g}")
    return device_bytes * share.numerator // share.denominator


def kv_budget_bytes(device_bytes: int, utilization: Ratio, weights: int,
                    activations: int = 0, overhead: int = 0) -> int:
    """What is left for the KV cache once weights, activations and overhead are in.
    ValueError, naming the largest term, when they do not fit."""
    usable = usable_bytes(device_bytes, utilization)
    terms = {name: _count(name, value, 0) for name, value in
             (("weights", weights), ("activations", activations), ("overhead", overhead))}
    left = usable - sum(terms.values())
    if left < 0:
        largest = max(terms, key=lambda k: terms[k])
        raise ValueError(f"no memory left for the KV cache: the usable {usable:,} B are "
                         f"{-left:,} B short of weights + activations + overhead "
                         f"(largest term: {largest} = {terms[largest]:,} B)")
    return left
