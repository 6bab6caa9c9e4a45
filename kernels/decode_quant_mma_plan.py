"""The launches of kernels/decode_quant_mma.py's register-only fp8/int8 decode: its
split rule, its plan for paged_decode (this kernel merging in-kernel, or this kernel
and the Triton reduce) and a host function for any schedule (the probe's and the
conformance's).
"""
from __future__ import annotations

import torch

from kernels.decode_plan import DecodePlan
from kernels.decode_quant_mma import DIM, MAX_GROUP, decode_quant_mma_kernel
from kernels.decode_splits import MAX_GRID_Z, MAX_SPLITS
from kernels.decode_workspace import DecodeWorkspace, scratch_partials
from kernels.launch import Kernel, cdiv, prepare
from kernels.paged_decode import prepare_reduce
from kernels.triton_compat import LOG2E

TILE = 16                        # tokens per step and prefetch depth by default: the H200's best on every
DEPTH = 2                        # probed row (bench/results/h200/sweeps/s12_probe_quant_mma_379b92a.json)
# (tile, prefetch depth) pairs that fit the registers without spilling on sm_90 (192 / 255 / 235
# registers; 32 tokens two tiles ahead spills).
SCHEDULES = ((16, 1), (32, 1), (16, 2))
PROGRAMS_PER_SM = 8              # one-warp programs of 235 registers resident on an sm_90 SM (65536 / 32 / 240)
MIN_SPLIT_TOKENS = 64            # four 16-token tiles: the prefetch has something to run ahead of
# The in-kernel merge (FUSED) reads its splits two at a time from one warp, a round trip to L2
# per pair on the critical path's last program; past this many the separate reduce (one
# program per query head, every split in one pass) is kept. A design bound, not a sweep:
# the H200 runs timed 2 splits fused (B=64) and 16 through the reduce (B=8), nothing between.
FUSED_MAX_SPLITS = 4


def quant_mma_splits(programs: int, max_context_len: int, sms: int) -> int:
    """Splits per (sequence, KV head) for a grid of `programs` before splitting: up to
    one wave of resident programs (PROGRAMS_PER_SM a SM), not past it, every split
    >= MIN_SPLIT_TOKENS. The H200 probe's best split counts are this rule's (tile 16,
    depth 2, 32/8/128): 2 at B=64 L=4096 and L=16384 (4 and 8 were 5-10 % slower,
    1 took 1.5x as long), 16 at B=8 L=4096."""
    slots = PROGRAMS_PER_SM * sms
    if programs >= slots:
        return 1
    return max(1, min(slots // programs, MAX_SPLITS, max_context_len // MIN_SPLIT_TOKENS))


def plan_quant_mma(query: torch.Tensor, kv_cache: torch.Tensor, kv_scales: torch.Tensor,
                   block_tables: torch.Tensor, context_lens: torch.Tensor, scale: float, out: torch.Tensor,
                   max_context_len: int, num_splits: int | None, sms: int, workspace: DecodeWorkspace | None,
                   pdl: bool, tile: int = TILE, depth: int = DEPTH, fused: bool | None = None) -> DecodePlan:
    """The launches of a paged_decode call that kernels/decode_route.py gave this
    kernel, for checked arguments: one, merging in-kernel (`fused`), or this kernel and
    the Triton reduce. `num_splits` None: `quant_mma_splits`; `fused` None: up to
    FUSED_MAX_SPLITS splits and no `pdl` (pdl=True asks for the separate reduce)."""
    num_seqs, num_heads, _ = query.shape
    num_kv_heads = kv_cache.shape[3]
    if num_splits is None:
        num_splits = quant_mma_splits(num_seqs * num_kv_heads, max_context_len, sms)
    if not 1 <= num_splits <= MAX_GRID_Z or (tile, depth) not in SCHEDULES:
        raise ValueError(f"num_splits must be in 1..{MAX_GRID_Z} and (tile, depth) one of {SCHEDULES}, not "
                         f"{num_splits} / ({tile}, {depth})")
    if fused is None:
        fused = num_splits <= FUSED_MAX_SPLITS and not pdl
    elif fused and pdl:
        raise ValueError("pdl=True launches the separate split-K reduce; it cannot go with the in-kernel merge")
    split_len = cdiv(max(cdiv(max_context_len, num_splits), 1), tile) * tile
    rows = num_seqs * num_heads * num_splits
    if rows * DIM >= 2**31:
        raise ValueError(f"num_splits {num_splits} too large: the partial results would need 64-bit offsets")
    part_m, part_l, part_acc, tickets = scratch_partials(workspace, rows, DIM, num_seqs * num_kv_heads if fused else 0,
                                                         query.device)
    partials = (part_acc, part_m, part_l)
    p_strides = (num_heads * num_splits, num_splits, 1)
    attend = prepare(_QUANT, (num_seqs, num_kv_heads, num_splits),
                     (query, kv_cache, kv_scales, block_tables, context_lens, out, *partials,
                      out if tickets is None else tickets),
                     (scale * LOG2E, split_len, query.stride(0), query.stride(1), out.stride(0), out.stride(1),
                      *(x // 4 for x in kv_cache.stride()[:4]), *kv_scales.stride(), block_tables.stride(0),
                      *p_strides),
                     (num_heads // num_kv_heads, kv_cache.shape[2], kv_cache.dtype == torch.int8, tile, depth, fused),
                     (("num_warps", 1),))
    merge = None if fused else prepare_reduce(out, partials, context_lens, split_len, num_splits, p_strides, DIM,
                                              False, pdl)
    return DecodePlan(attend, merge, True, partials, tickets, register_only=True)


def decode_quant_mma(query: torch.Tensor, kv_cache: torch.Tensor, kv_scales: torch.Tensor, block_tables: torch.Tensor,
                     context_lens: torch.Tensor, scale: float, max_context_len: int, num_splits: int,
                     out: torch.Tensor | None = None, tile: int = TILE, depth: int = DEPTH,
                     fused: bool | None = None) -> torch.Tensor:
    """paged_decode's result over an e4m3 or int8 cache through this kernel (merging
    in-kernel or with the Triton reduce, `fused` as `plan_quant_mma` takes it), on any
    schedule (arguments as paged_decode takes them; checked only for what this kernel
    assumes): the probe's and the conformance's way to every schedule. paged_decode
    routes here through `plan_quant_mma`."""
    num_seqs, num_heads, head_dim = query.shape
    num_blocks, two, block_size, num_kv_heads, cache_dim = kv_cache.shape
    group = num_heads // num_kv_heads
    if kv_cache.dtype not in (torch.float8_e4m3fn, torch.int8) or query.dtype not in (torch.bfloat16,
                                                                                       torch.float16):
        raise ValueError(f"decode_quant_mma takes an e4m3 or int8 cache and bf16/fp16 queries, not "
                         f"{kv_cache.dtype} / {query.dtype}")
    if head_dim != DIM or cache_dim != DIM or num_heads % num_kv_heads or group > MAX_GROUP:
        raise ValueError(f"decode_quant_mma takes head_dim {DIM} and a GQA group <= {MAX_GROUP}, not head_dim "
                         f"{head_dim} with {num_heads}/{num_kv_heads} heads")
    cs = kv_cache.stride()
    if cs[4] != 1 or query.stride(2) != 1 or any(x % 4 for x in cs[:4]) or kv_cache.data_ptr() % 16:
        raise ValueError(f"decode_quant_mma reads the cache in 4-byte words: strides {cs} must be multiples of 4")
    if num_splits < 1 or (tile, depth) not in SCHEDULES:
        raise ValueError(f"num_splits must be >= 1 and (tile, depth) one of {SCHEDULES}, not {num_splits} / "
                         f"({tile}, {depth})")
    if out is None:
        out = torch.empty_like(query)
    plan = plan_quant_mma(query, kv_cache, kv_scales, block_tables, context_lens, scale, out, max_context_len,
                          num_splits, 1, None, False, tile, depth, fused)
    return plan.run(query, kv_cache, kv_scales, block_tables, context_lens, out)


_QUANT = Kernel(decode_quant_mma_kernel, "GROUP", "BLOCK_SIZE", "IS_INT8", "TILE", "DEPTH", "FUSED")
