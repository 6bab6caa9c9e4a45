"""Launch configuration of paged_decode: tile size, warps, stages and split-K.

One small function so a benchmark can sweep each knob by keyword and the
choice is written down in one place (see `choose_decode_config`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from kernels.launch import cdiv, next_pow2
from kernels.triton_compat import is_interpreting

TILE_BYTES = 16 * 1024       # bytes of one K (or V) tile: enough loads in flight per program
MIN_BLOCK_N = 16             # tl.dot needs >= 16 along every dimension
MAX_BLOCK_N = 128
MIN_SPLIT_TOKENS = 128       # below this a split costs more in launch/reduce than it saves
MAX_SPLITS = 64
WAVES = 4                    # target programs per SM when splitting
MAX_GRID_Z = 65535           # CUDA limit of the grid's third dimension (the splits)
INTERPRETER_SPLITS = 2       # exercises the split + reduce path on CPU without many programs
HALF_TILE_FROM = 5           # programs per SM from which 2-byte caches take half tiles and half the warps


@dataclass(frozen=True)
class DecodeConfig:
    block_n: int       # tokens per K/V tile (looked up per token through the block table)
    num_warps: int
    num_stages: int
    num_splits: int    # programs per (sequence, KV head) along the context; 1 = no reduce step
    split_len: int     # tokens per split; split s covers [s * split_len, (s + 1) * split_len)


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (a nominal 1 elsewhere)."""
    if device.type != "cuda":
        return 1
    return cuda_sm_count(torch.cuda.current_device() if device.index is None else device.index)


@functools.cache
def cuda_sm_count(index: int) -> int:
    """SMs of CUDA device `index`: asked once (a property query costs microseconds per launch)."""
    return torch.cuda.get_device_properties(index).multi_processor_count


def choose_decode_config(num_seqs: int, num_kv_heads: int, head_dim: int, cache_elem_bytes: int,
                         max_context_len: int, device: torch.device, *, num_splits: int | None = None,
                         block_n: int | None = None, num_warps: int | None = None,
                         num_stages: int | None = None) -> DecodeConfig:
    """Pick the decode launch; any keyword given overrides the heuristic (see
    `decode_config`, which this calls with the device's SM count).
    """
    sms = None if is_interpreting() else sm_count(device)
    return decode_config(num_seqs, num_kv_heads, head_dim, cache_elem_bytes, max_context_len, sms,
                         num_splits, block_n, num_warps, num_stages)


@functools.lru_cache(maxsize=512)
def decode_config(num_seqs: int, num_kv_heads: int, head_dim: int, cache_elem_bytes: int,
                  max_context_len: int, sms: int | None, num_splits: int | None = None,
                  block_n: int | None = None, num_warps: int | None = None,
                  num_stages: int | None = None) -> DecodeConfig:
    """The decode launch for these shapes on a GPU of `sms` SMs (None: the
    interpreter). A pure function, cached per shape and context length: an
    engine's layers ask with the same arguments within a step.

    - block_n: a K tile of about TILE_BYTES (64 tokens x 128 dims x 2 B = 16 KB for
      bf16): big enough to keep many 16-byte loads in flight per program, small
      enough that K, V and their float32 scores stay in registers with 4 warps.
      1-byte caches are sized by their 2-byte float16 up-cast (same tokens as
      bf16).
    - num_warps: 4 for 2-byte caches (8 past 8192 tile elements). 1-byte caches
      get 2: Triton feeds 1-byte dot operands from shared memory with ~1-byte
      loads and byte permutes (4.7 SASS instructions per cache byte at D=128
      against bf16's 1.6), and fewer warps per program mean fewer cross-warp
      softmax reductions and more programs per SM to hide that work. H100 sweep
      (B=64, L=4096, 32/8/128, `python3 -m bench.sweep_decode`): fp8 221.9 us
      at 64 tokens / 2 warps / 3 stages, 271 us at 128 / 4, 423 us at 64 / 8;
      int8 232 us, 285 us, 431 us.
    - num_stages 3: the loop's K/V loads become cp.async copies two tiles ahead.
      H200 sweeps (session 9, bf16 32/8/128, 3 against 2 stages, same reduce):
      B=8 L=4096 42.2-42.6 against 44.3-44.5 us (41.1-41.4 against 42.4-42.8
      with the reduce kernel), B=8 L=512 15.4 against 15.6, B=32 130.8-131.1
      against 132.6-132.8, B=1 15.2-15.4 against 15.7-15.8, B=64 247.1 against
      248.7 (4 stages level with 3, 5 slower). Compiled for sm_90 (bf16, D=128,
      block_n 64) ~5 programs fit on an SM, so the B=64 x Hkv=8 headline grid
      (512 programs) is resident in one wave.
    - Grids of many programs (2-byte caches, unsplit, >= HALF_TILE_FROM programs
      per SM) take half the tile and half the warps, 2 stages: smaller programs
      let more of the grid be resident at once instead of a second, partly idle
      wave. H200 sweeps (session 9, bf16), half tile against the full one:
      32/8/128 B=256 L=1024 (15.5 programs per SM) 251.3 against 274.8 us;
      B=128 L=2048 (7.8) 247.7 against 261.6; 32/16/128 B=64 (7.8) 493.6 against
      516.0; 9/3/64 B=256 L=4096 (5.8) 199.4 against 220.9; 32/32/128 B=256
      L=512 (62) 491.7 against 496.1; 32/32/128 B=64 L=4096 (15.5) 976.3,
      level with the full tile's 964-966 at 3 stages. At 32/8/128 B=64 L=4096
      (3.9 per SM) the full tile stays best. A quarter tile with one warp won
      1.4 % more at 32/8 B=256 L=1024 but lost 14 % at 32/32 B=64 L=4096: not used.
    - num_splits: the grid has num_seqs * num_kv_heads programs before
      splitting. When that already covers the GPU twice over, no split (the reduce
      step would only add traffic). Otherwise split each context so the grid
      reaches, without passing, ~WAVES programs per SM (about what stays resident:
      overshooting leaves a second, mostly idle wave), but keep every split
      >= MIN_SPLIT_TOKENS.
      Under the interpreter a fixed INTERPRETER_SPLITS keeps CPU runs short while
      still exercising the reduce step.
    Splits are rounded to whole tiles, so the auto choice never has an empty
    split for the longest sequence; a forced `num_splits` is honoured exactly
    (split_len = ceil(max_context_len / num_splits)), empty splits included.
    """
    head_dim_pad = max(16, next_pow2(head_dim))
    quantised = cache_elem_bytes == 1
    # 1 = the full tile; 2 = half tiles for a grid of many programs (see above).
    shrink = 1
    many = sms is not None and num_seqs * num_kv_heads >= HALF_TILE_FROM * sms
    if many and not quantised and num_splits in (None, 1):
        shrink = 2
    if block_n is None:
        block_n = TILE_BYTES // (head_dim_pad * max(cache_elem_bytes, 2) * shrink)
        block_n = max(MIN_BLOCK_N, min(MAX_BLOCK_N, block_n))
    if block_n < MIN_BLOCK_N or block_n & (block_n - 1):
        raise ValueError(f"block_n must be a power of two >= {MIN_BLOCK_N}, got {block_n}")
    if num_warps is None:
        num_warps = 2 if quantised else (8 if block_n * head_dim_pad > 8192 else 4) // shrink
    if num_stages is None:
        num_stages = 2 if shrink > 1 else 3
    ctx = max(1, max_context_len)
    if num_splits is not None:
        if not 1 <= num_splits <= MAX_GRID_Z:
            raise ValueError(f"num_splits must be in 1..{MAX_GRID_Z} (a CUDA grid dimension), got {num_splits}")
        return DecodeConfig(block_n, num_warps, num_stages, num_splits, cdiv(ctx, num_splits))
    splits = auto_splits(num_seqs * num_kv_heads, ctx, sms)
    tiles = cdiv(ctx, block_n)
    splits = min(splits, tiles)
    split_len = cdiv(tiles, splits) * block_n
    return DecodeConfig(block_n, num_warps, num_stages, cdiv(ctx, split_len), split_len)


def auto_splits(programs: int, max_context_len: int, sms: int | None) -> int:
    """Splits per (sequence, KV head) for a grid of `programs` before splitting
    on a GPU with `sms` multiprocessors (None: the interpreter)."""
    if sms is None:
        return INTERPRETER_SPLITS
    programs = max(1, programs)
    if programs >= 2 * sms:
        return 1
    want = (WAVES * sms) // programs
    return max(1, min(want, MAX_SPLITS, max_context_len // MIN_SPLIT_TOKENS))
