"""Launch parameters of the paged prefill kernel: one heuristic, overridable per call."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from kernels.prefill_route import KERNELS

_MIN_DOT = 16  # tl.dot needs every dimension >= 16


@dataclass(frozen=True)
class PrefillConfig:
    block_m: int      # query rows per program (one sequence, one query head)
    block_n: int      # KV tokens per inner-loop step, gathered token by token through the block table
    num_warps: int
    num_stages: int   # software pipelining depth of the KV loads
    kernel: str = "auto"   # "auto" / "triton" / "sm90": kernels/prefill_route.py (the tile knobs are Triton's)


def _pow2_at_least(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


# The pipeline depth that keeps a KV tile in flight a whole iteration ahead: with the
# block-table load in the chain (table -> K/V -> dot), Triton 3.6 on sm_90 gives the
# K/V loads 2 stages of distance only from num_stages 5 (at 3 and 4 the loop waits on
# every copy at its top). Worth it on long KV loops; on short ones the deeper
# prologue costs more than it hides.
DEEP_STAGES = 5
DEEP_FROM_CONTEXT = 2048


def prefill_config(head_dim: int, query_dtype: torch.dtype, on_gpu: bool,
                   max_query_len: int | None = None, max_context_len: int | None = None,
                   **overrides: int | str | None) -> PrefillConfig:
    """Tunables of `paged_prefill`, in one place.

    GPU (swept on an H200, triton 3.6, causal bf16, page 16, programs ordered by
    KV head and sequence; bench/results/h200/sweeps/, session 8):
      head_dim <= 64:  BLOCK_M 128, BLOCK_N 64, 8 warps, 5 stages (B=4 L=4096
                       32/8/64: 352 TFLOP/s against 301 for the old 4 warps, 3 stages)
      head_dim <= 128: BLOCK_M 128, BLOCK_N 128, 8 warps; 5 stages when the longest
                       context is >= DEEP_FROM_CONTEXT tokens, else 3 (5 stages: extend
                       512 over 3584 cached 32/8/128 383 against 355, B=4 L=4096
                       32/32/128 365 against 360; at L=1024 3 stages is 3-6 % faster)
      head_dim <= 256: BLOCK_M 128, BLOCK_N 64, 8 warps, 2 stages (B=4 L=4096
                       16/4/256: 412 TFLOP/s against 138 for the old BLOCK_M 64,
                       BLOCK_N 32; it keeps 255 registers and 16 bytes of stack)
      float32 queries (a correctness path, dots in "ieee" fp32 without tensor
      cores): BLOCK_M 64 (32 for head_dim 256), BLOCK_N 32, 8 warps, 2 stages
      (1 for 256); the fp32 dot needs many registers, so the tiles stay small.
    Interpreter (CPU tests): BLOCK_M 32, BLOCK_N 16, so small test shapes still
    cover several query tiles, several KV tiles and the diagonal.

    A batch whose longest query is short (decode rows, short extends) gets a
    smaller BLOCK_M (>= 16, the tl.dot minimum) so a 1-token query does not pay
    for 128 rows (and at most 4 warps below 64 rows). `max_query_len` and
    `max_context_len` are host ints when the caller knows them (None: 3 stages).

    `overrides` (block_m, block_n, num_warps, num_stages, kernel; None = keep) let
    benchmarks sweep and tests pick tile shapes or the kernel; block sizes must be
    powers of two >= 16.
    """
    long_loop = max_context_len is not None and max_context_len >= DEEP_FROM_CONTEXT
    if not on_gpu:
        cfg = PrefillConfig(block_m=32, block_n=16, num_warps=4, num_stages=1)
    elif head_dim <= 64:
        cfg = PrefillConfig(block_m=128, block_n=64, num_warps=8, num_stages=DEEP_STAGES)
    elif head_dim <= 128:
        cfg = PrefillConfig(block_m=128, block_n=128, num_warps=8, num_stages=DEEP_STAGES if long_loop else 3)
    else:
        cfg = PrefillConfig(block_m=128, block_n=64, num_warps=8, num_stages=2)
    if on_gpu and query_dtype == torch.float32:
        big = head_dim > 128
        cfg = PrefillConfig(block_m=32 if big else 64, block_n=32, num_warps=8, num_stages=1 if big else 2)
    if max_query_len is not None and max_query_len < cfg.block_m:
        block_m = max(_MIN_DOT, _pow2_at_least(max_query_len))
        cfg = replace(cfg, block_m=block_m, num_warps=min(cfg.num_warps, 4) if block_m <= 32 else cfg.num_warps)
    unknown = set(overrides) - {"block_m", "block_n", "num_warps", "num_stages", "kernel"}
    if unknown:
        raise ValueError(f"unknown prefill tuning option(s): {sorted(unknown)}")
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    # The tile knobs tune the Triton kernel: asking for one picks it.
    triton_knobs = sorted(k for k in ("block_n", "num_warps", "num_stages") if overrides.get(k) is not None)
    if triton_knobs and cfg.kernel == "sm90":
        raise ValueError(f"{', '.join(triton_knobs)} tune the Triton kernel; kernel='sm90' takes none of them")
    if triton_knobs and cfg.kernel == "auto":
        cfg = replace(cfg, kernel="triton")
    for name in ("block_m", "block_n"):
        value = getattr(cfg, name)
        if value < _MIN_DOT or value & (value - 1):
            raise ValueError(f"{name} must be a power of two >= {_MIN_DOT}, got {value}")
    if cfg.kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {cfg.kernel!r}")
    if cfg.num_warps not in (1, 2, 4, 8, 16) or cfg.num_stages < 1:
        raise ValueError(f"num_warps must be a power of two <= 16 and num_stages >= 1, got {cfg}")
    return cfg
