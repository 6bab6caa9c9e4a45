"""Launch parameters of the paged prefill kernel: one heuristic, overridable per call."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

_MIN_DOT = 16  # tl.dot needs every dimension >= 16


@dataclass(frozen=True)
class PrefillConfig:
    block_m: int      # query rows per program (one sequence, one query head)
    block_n: int      # KV tokens per inner-loop step, gathered token by token through the block table
    num_warps: int
    num_stages: int   # software pipelining depth of the KV loads


def _pow2_at_least(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def prefill_config(head_dim: int, query_dtype: torch.dtype, on_gpu: bool,
                   max_query_len: int | None = None, **overrides: int | None) -> PrefillConfig:
    """Tunables of `paged_prefill`, in one place.

    GPU (sized for the H100; the flash-attention shapes that keep Q in registers,
    a K and a V tile per pipeline stage in shared memory, and the MMA busy):
      head_dim <= 64:  BLOCK_M 128, BLOCK_N 64, 4 warps, 3 stages
      head_dim <= 128: BLOCK_M 128, BLOCK_N 128, 8 warps, 3 stages (the benchmark
                       shape; sweep of 16 tile shapes at B=4 L=4096 32/32/128 on an
                       H200: 318 TFLOP/s against 266 for BLOCK_N 64, the next best
                       311 at BLOCK_N 64 with 4 warps)
      head_dim <= 256: BLOCK_M 64,  BLOCK_N 32, 8 warps, 2 stages (Q and the
                       accumulator double in size: fewer rows, more threads to hold them,
                       fewer stages to keep shared memory in budget)
      float32 queries (a correctness path, dots in "ieee" fp32 without tensor
      cores): BLOCK_M 64 (32 for head_dim 256), BLOCK_N 32, 8 warps, 2 stages
      (1 for 256); the fp32 dot needs many registers, so the tiles stay small.
    These compile for sm_90 without register spills for 16-bit queries
    (checked by compiling ahead of time; the fp32 path spills a little).
    Interpreter (CPU tests): BLOCK_M 32, BLOCK_N 16, so small test shapes still
    cover several query tiles, several KV tiles and the diagonal.

    A batch whose longest query is short (decode rows, short extends) gets a
    smaller BLOCK_M (>= 16, the tl.dot minimum) so a 1-token query does not pay
    for 128 rows (and at most 4 warps below 64 rows). `max_query_len` is a
    host int when the caller knows it.

    `overrides` (block_m, block_n, num_warps, num_stages; None = keep) let
    benchmarks sweep and tests pick tile shapes; block sizes must be powers of
    two >= 16.
    """
    if not on_gpu:
        cfg = PrefillConfig(block_m=32, block_n=16, num_warps=4, num_stages=1)
    elif head_dim <= 64:
        cfg = PrefillConfig(block_m=128, block_n=64, num_warps=4, num_stages=3)
    elif head_dim <= 128:
        cfg = PrefillConfig(block_m=128, block_n=128, num_warps=8, num_stages=3)
    else:
        cfg = PrefillConfig(block_m=64, block_n=32, num_warps=8, num_stages=2)
    if on_gpu and query_dtype == torch.float32:
        big = head_dim > 128
        cfg = PrefillConfig(block_m=32 if big else 64, block_n=32, num_warps=8, num_stages=1 if big else 2)
    if max_query_len is not None and max_query_len < cfg.block_m:
        block_m = max(_MIN_DOT, _pow2_at_least(max_query_len))
        cfg = replace(cfg, block_m=block_m, num_warps=min(cfg.num_warps, 4) if block_m <= 32 else cfg.num_warps)
    unknown = set(overrides) - {"block_m", "block_n", "num_warps", "num_stages"}
    if unknown:
        raise ValueError(f"unknown prefill tuning option(s): {sorted(unknown)}")
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    for name in ("block_m", "block_n"):
        value = getattr(cfg, name)
        if value < _MIN_DOT or value & (value - 1):
            raise ValueError(f"{name} must be a power of two >= {_MIN_DOT}, got {value}")
    if cfg.num_warps not in (1, 2, 4, 8, 16) or cfg.num_stages < 1:
        raise ValueError(f"num_warps must be a power of two <= 16 and num_stages >= 1, got {cfg}")
    return cfg
