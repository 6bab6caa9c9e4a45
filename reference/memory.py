"""Closed-form KV-cache memory math: the oracle behind `pagedlm memory`.

Pure Python integers (and exact `Fraction`s where a ratio is asked for); no torch.
Every size is in bytes, every count an `int`.

The cache holds, per token, a K and a V row of `head_dim` values for every KV head
of every layer:

    bytes_per_token = 2 × layers × kv_heads × (head_dim × dtype_bytes + scale_bytes_per_head)

`scale_bytes_per_head` is 0 for float caches. Quantised caches (int8, fp8 e4m3)
store one float32 scale per token and KV head, for K and V separately (see
kernels/README.md), so they pass `KV_SCALE_BYTES` (4); `scale_bytes_per_head_for`
picks it from a dtype name. Keeping it an explicit argument keeps the textbook
formula (and the seed's worked examples) exact when it is 0.
"""
from __future__ import annotations

import math
from fractions import Fraction
from types import MappingProxyType
from typing import Mapping, Union

# Bytes per element of each cache/model dtype we support. Read-only on purpose.
DTYPE_BYTES: Mapping[str, int] = MappingProxyType({
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "fp8": 1,      # float8 e4m3
    "int8": 1,
})
# Dtypes whose cache carries per-token-per-head float32 scales.
QUANTISED_DTYPES = frozenset({"fp8", "int8"})
KV_SCALE_BYTES = 4  # one float32 scale per token, KV head and K/V

Number = Union[int, float, Fraction, str]


def _positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return value


def _non_negative_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value}")
    return value


def dtype_bytes(dtype: str) -> int:
    """Bytes per element of a dtype name in `DTYPE_BYTES`."""
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        known = ", ".join(DTYPE_BYTES)
        raise ValueError(f"dtype: unknown {dtype!r} (known: {known})") from None


def scale_bytes_per_head_for(dtype: str) -> int:
    """Scale bytes stored per token, KV head and K/V for a cache of `dtype`."""
    dtype_bytes(dtype)  # validates the name
    return KV_SCALE_BYTES if dtype in QUANTISED_DTYPES else 0


def bytes_per_token(layers: int, kv_heads: int, head_dim: int, dtype_bytes: int,
                    scale_bytes_per_head: int = 0) -> int:
    """K and V bytes one token occupies across all layers (GQA: pass KV heads)."""
    _positive_int("layers", layers)
    _positive_int("kv_heads", kv_heads)
    _positive_int("head_dim", head_dim)
    _positive_int("dtype_bytes", dtype_bytes)
    _non_negative_int("scale_bytes_per_head", scale_bytes_per_head)
    return 2 * layers * kv_heads * (head_dim * dtype_bytes + scale_bytes_per_head)


def bytes_per_block(token_bytes: int, block_size: int) -> int:
    """Bytes of one cache block of `block_size` token slots."""
    _positive_int("token_bytes", token_bytes)
    _positive_int("block_size", block_size)
    return token_bytes * block_size


def blocks_needed(tokens: int, block_size: int) -> int:
    """Blocks a sequence of `tokens` tokens occupies: ceil(tokens / block_size)."""
    _non_negative_int("tokens", tokens)
    _positive_int("block_size", block_size)
    return -(-tokens // block_size)


def last_block_waste(tokens: int, block_size: int) -> int:
    """Empty slots in the last (partial) block; 0 when tokens fill whole blocks."""
    return blocks_needed(tokens, block_size) * block_size - tokens


def waste_fraction(tokens: int, block_size: int) -> Fraction:
    """Wasted slots / allocated slots, exactly (100 tokens at 16: 12/112)."""
    allocated = blocks_needed(tokens, block_size) * block_size
    if allocated == 0:
        return Fraction(0)
    return Fraction(last_block_waste(tokens, block_size), allocated)


def num_blocks_in_budget(budget: int, block_bytes: int) -> int:
    """Whole blocks that fit in `budget` bytes: floor(budget / block_bytes)."""
    _non_negative_int("budget", budget)
    _positive_int("block_bytes", block_bytes)
    return budget // block_bytes


def token_capacity(num_blocks: int, block_size: int) -> int:
    """Token slots in `num_blocks` blocks."""
    _non_negative_int("num_blocks", num_blocks)
    _positive_int("block_size", block_size)
    return num_blocks * block_size


def _exact_ratio(name: str, value: Number) -> Fraction:
    # A float goes through its shortest repr so 0.9 means 9/10, not 0.9000000000000000222.
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        return Fraction(repr(value)) if isinstance(value, float) else Fraction(value)
    except (ValueError, TypeError, ZeroDivisionError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None


def usable_memory(gpu_memory: int, utilization: Number = 1) -> int:
    """floor(gpu_memory × utilization): the share of the device the engine may use."""
    _positive_int("gpu_memory", gpu_memory)
    util = _exact_ratio("utilization", utilization)
    if not 0 < util <= 1:
        raise ValueError(f"utilization must be in (0, 1], got {float(util)}")
    return math.floor(gpu_memory * util)


def kv_budget(gpu_memory: int, utilization: Number, weights: int,
              activations: int = 0, overhead: int = 0) -> int:
    """Bytes left for the KV cache: gpu_memory x utilization - weights - activations - overhead.

    Raises ValueError naming the terms (and the largest one) when they do not fit.
    """
    usable = usable_memory(gpu_memory, utilization)
    terms = {
        "weights": _non_negative_int("weights", weights),
        "activations": _non_negative_int("activations", activations),
        "overhead": _non_negative_int("overhead", overhead),
    }
    used = sum(terms.values())
    if used > usable:
        largest = max(terms, key=terms.__getitem__)
        raise ValueError(
            f"no memory left for the KV cache: weights + activations + overhead = {used:,} B "
            f"exceed gpu_memory x utilization = {usable:,} B by {used - usable:,} B "
            f"(largest term: {largest} = {terms[largest]:,} B)")
    return usable - used
