"""paged_decode: one query token per sequence over its paged KV context (launcher).

The kernels live in kernels/decode_kernels.py and the launch heuristic in
kernels/decode_splits.py. A sequence with context_len 0 gets an all-zero
output row (there is nothing to attend to; zeros keep a padded batch finite).

Host cost (kernels/README.md, "Launch cost"): the checks read each argument's
attributes once, the config is cached per shape, the device's SM count and
capability are asked once, the kernels go out through their compiled handles
(kernels/launch.py) and the split-K partials come from a caller's
`DecodeWorkspace` when given. An unchecked call does no host sync and, with a
workspace, no allocation; a repeat of an unchecked call on a workspace runs the
plan the first one left there (kernels/decode_plan.py).
"""
from __future__ import annotations

import torch

from kernels.decode_kernels import decode_reduce_kernel, decode_split_kernel
from kernels.call_key import call_key
from kernels.decode_plan import DecodePlan, split_ptrs
from kernels.decode_splits import MAX_SPLITS, DecodeConfig, decode_config, sm_count
from kernels.decode_workspace import DecodeWorkspace, scratch_partials
from kernels.decode_route import check_kernel, use_quant_mma
from kernels.launch import Kernel, Prepared, next_pow2, prepare
from kernels.pdl import use_pdl
from kernels.triton_compat import LOG2E, is_interpreting
from kernels.validation import (AttentionShape, check_attention, check_index_tensors, check_indices,
                                check_scale)

_SPLIT = Kernel(decode_split_kernel, "GROUP", "GROUP_PAD", "HEAD_DIM", "HEAD_DIM_PAD", "BLOCK_SIZE", "BLOCK_N",
                "QUANT", "QUANT_F16", "IS_INT8", "SPLIT", "FUSED_REDUCE", "GROUP_P2", "REDUCE_CHUNK", "DOT_FP32",
                "DOT_PRECISION", "INTERPRET", "PDL")
SPLIT_REDUCES = ("fused", "kernel")
# Floats per thread of the fused merge's [group, chunk, head_dim] partials tile: it shares
# the split kernel's registers, and at 32 the bf16 kernel stays at its 80 (sm_90, triton 3.6).
FUSED_MERGE_FLOATS = 32


def fused_merge_chunk(group: int, head_dim_pad: int, num_warps: int) -> int:
    """Splits the fused merge reads per pass (a power of two >= 1)."""
    fit = max(1, FUSED_MERGE_FLOATS * 32 * num_warps // (next_pow2(group) * head_dim_pad))
    return 1 << (fit.bit_length() - 1)
_REDUCE = Kernel(decode_reduce_kernel, "HEAD_DIM", "HEAD_DIM_PAD", "CHUNK", "INTERPRET", "PDL")


def _context_bound(block_tables: torch.Tensor, context_lens: torch.Tensor, shape: AttentionShape,
                   max_context_len: object, checked: bool) -> int:
    """The longest context the launch must cover: checked (one sync), the caller's
    `max_context_len`, or read from the device (the one sync of an unchecked call)."""
    if max_context_len is not None and (isinstance(max_context_len, bool) or not isinstance(max_context_len, int)
                                        or max_context_len < 0):
        raise ValueError(f"max_context_len must be a Python int >= 0, got {max_context_len!r}")
    if checked:
        longest = check_indices(block_tables, context_lens, shape.num_blocks, shape.block_size).longest
        if max_context_len is None:
            return longest
        if longest > max_context_len:
            raise ValueError(f"max_context_len {max_context_len} is shorter than a context of {longest} tokens")
        return max_context_len
    return int(context_lens.max()) if max_context_len is None else max_context_len


def paged_decode(query: torch.Tensor, kv_cache: torch.Tensor, block_tables: torch.Tensor,
                 context_lens: torch.Tensor, scale: float, kv_scales: torch.Tensor | None = None,
                 out: torch.Tensor | None = None, *, num_splits: int | None = None,
                 block_n: int | None = None, num_warps: int | None = None, num_stages: int | None = None,
                 max_context_len: int | None = None, check_indices: bool = True,
                 pdl: bool | None = None, workspace: DecodeWorkspace | None = None,
                 split_reduce: str | None = None, kernel: str = "auto") -> torch.Tensor:
    """Attention of query [B, Hq, D] (the last token of each sequence) over the
    paged context: kv_cache [num_blocks, 2, block_size, Hkv, D], int32
    block_tables [B, max_blocks], int32 context_lens [B]. Returns [B, Hq, D] in
    the query dtype (written into `out` when given). int8/fp8 caches need
    kv_scales [num_blocks, 2, block_size, Hkv].

    Keywords override the launch heuristic (kernels/decode_splits.py) for
    benchmarks and tests. `max_context_len` (>= every context) spares a device
    sync; `check_indices=False` also skips the block-table range checks, which
    sync, for CUDA-graph capture by a caller that guarantees them.
    `split_reduce` says who merges split-K partials: "fused" (the last split
    program of each sequence and KV head: one launch per call), "kernel" (a
    second launch, which `pdl` starts with programmatic dependent launch; pdl
    None: on sm_90+, see kernels/pdl.py) or None: fused where its merge takes one
    pass (`fused_merge_chunk` splits or fewer), else the kernel (or when pdl=True).
    `workspace` (a `DecodeWorkspace`, one per stream and call site) holds the
    split-K partials between calls instead of a buffer per call, and the launch
    plans of unchecked calls with an int `max_context_len`: a repeat call whose
    tensors have the same metadata runs its plan without the checks, which ran
    when it was made (kernels/decode_plan.py).
    `kernel` ("auto" / "triton" / "quant_mma", kernels/decode_route.py): on an
    sm_89+ GPU "auto" decodes fp8/int8 caches of head_dim 128 with
    kernels/decode_quant_mma.py (its own split heuristic; `num_splits` applies
    to it, and `pdl` only when True: its attention pass signals no early launch,
    so PDL would only cost host time; the Triton kernel's knobs pick the Triton kernel).
    """
    # A repeat call of the same metadata on a workspace runs its plan (kernels/decode_plan.py);
    # anything else, and the first call, takes the full path, which plans for the next.
    interpreting = is_interpreting()
    key = None
    if workspace is not None and not check_indices and type(max_context_len) is int:
        key = call_key((query, kv_cache, block_tables, context_lens, kv_scales, out),
                       (scale, max_context_len, num_splits, block_n, num_warps, num_stages, pdl, split_reduce,
                        kernel, interpreting))
        plan = None if key is None else workspace.plans.get(key)
        if plan is not None:
            return plan.run(query, kv_cache, kv_scales, block_tables, context_lens, out)
    scale = check_scale(scale)
    check_kernel(kernel)
    if split_reduce is not None and split_reduce not in SPLIT_REDUCES:
        raise ValueError(f"split_reduce must be one of {SPLIT_REDUCES} or None, got {split_reduce!r}")
    if split_reduce == "fused" and pdl:
        raise ValueError("pdl=True launches the separate split-K reduce; it needs split_reduce='kernel'")
    shape = check_attention("paged_decode", query, kv_cache, kv_scales, out, interpreting)
    num_seqs = query.shape[0]
    check_index_tensors(block_tables, context_lens, num_seqs, query.device)
    if num_seqs == 0:
        return torch.empty_like(query) if out is None else out
    longest = _context_bound(block_tables, context_lens, shape, max_context_len, check_indices)
    planned_out = torch.empty_like(query) if out is None else out
    knobs = tuple(name for name, v in (("block_n", block_n), ("num_warps", num_warps), ("num_stages", num_stages),
                                       ("split_reduce='fused'", split_reduce == "fused" or None)) if v is not None)
    if kernel != "triton" and use_quant_mma(kernel, query, kv_cache, knobs, interpreting):
        from kernels.decode_quant_mma_plan import plan_quant_mma    # Gluon: imported only where it runs
        plan = plan_quant_mma(query, kv_cache, kv_scales, block_tables, context_lens, scale, planned_out, longest,
                              num_splits, sm_count(query.device), workspace,
                              bool(pdl) and use_pdl(query.device, pdl))
        if key is not None:
            workspace.plans.put(key, plan)
        return plan.run(query, kv_cache, kv_scales, block_tables, context_lens, planned_out)
    cfg = decode_config(num_seqs, shape.num_kv_heads, shape.head_dim, kv_cache.element_size(), longest,
                        None if interpreting else sm_count(query.device), num_splits, block_n, num_warps, num_stages)
    plan = _plan(query, kv_cache, kv_scales, block_tables, context_lens, scale, planned_out, cfg, shape,
                 interpreting, pdl, workspace, split_reduce)
    if key is not None:
        workspace.plans.put(key, plan)
    return plan.run(query, kv_cache, kv_scales, block_tables, context_lens, planned_out)


def _plan(query: torch.Tensor, kv_cache: torch.Tensor, kv_scales: torch.Tensor | None,
          block_tables: torch.Tensor, context_lens: torch.Tensor, scale: float, out: torch.Tensor,
          cfg: DecodeConfig, shape: AttentionShape, interpreting: bool, pdl: bool | None,
          workspace: DecodeWorkspace | None, split_reduce: str | None) -> DecodePlan:
    """The launches of this call, for checked arguments (`out` given: its strides are launch arguments)."""
    num_seqs, num_heads, head_dim = query.shape
    num_kv_heads = shape.num_kv_heads
    group = num_heads // num_kv_heads
    head_dim_pad = max(16, next_pow2(head_dim))
    splits = cfg.num_splits
    split = splits > 1
    quant = shape.quantized
    chunk = fused_merge_chunk(group, head_dim_pad, cfg.num_warps)
    if split_reduce is None:
        fused = split and not pdl and splits <= chunk
    else:
        fused = split and split_reduce == "fused"
    pdl = split and not fused and use_pdl(query.device, pdl, interpreting)
    if split:
        if num_seqs * num_heads * splits * head_dim_pad >= 2**31:
            raise ValueError(f"num_splits {splits} too large: the partial results would need 64-bit offsets")
        part_m, part_l, part_acc, tickets = scratch_partials(workspace, num_seqs * num_heads * splits, head_dim_pad,
                                                             num_seqs * num_kv_heads if fused else 0, query.device)
        partials = (part_acc, part_m, part_l)
        p_strides = (num_heads * splits, splits, 1)
    else:
        partials = tickets = None
        p_strides = (0, 0, 0)
    s_strides = kv_scales.stride() if quant else (0, 0, 0, 0)
    q_strides, o_strides = query.stride(), out.stride()
    split_launch = prepare(
        _SPLIT, (num_seqs, num_kv_heads, splits),
        split_ptrs(query, kv_cache, kv_scales if quant else None, block_tables, context_lens, out, partials, tickets),
        (scale * LOG2E, cfg.split_len,
         q_strides[0], q_strides[1], o_strides[0], o_strides[1], *kv_cache.stride()[:4], *s_strides,
         block_tables.stride(0), *p_strides),
        (group, max(16, next_pow2(group)), head_dim, head_dim_pad, shape.block_size, cfg.block_n,
         quant, quant and query.dtype != torch.float32, kv_cache.dtype == torch.int8, split,
         fused, next_pow2(group), min(next_pow2(splits), chunk) if fused else 1,
         interpreting, "ieee" if query.dtype == torch.float32 else "tf32", interpreting, pdl),
        (("num_warps", cfg.num_warps), ("num_stages", cfg.num_stages)))
    reduce_launch = None
    if split and not fused:
        reduce_launch = prepare_reduce(out, partials, context_lens, cfg.split_len, splits, p_strides, head_dim,
                                       interpreting, pdl)
    return DecodePlan(split_launch, reduce_launch, quant, partials, tickets)


def prepare_reduce(out: torch.Tensor, partials: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                   context_lens: torch.Tensor, split_len: int, splits: int, p_strides: tuple[int, int, int],
                   head_dim: int, interpreting: bool, pdl: bool) -> Prepared:
    """The separate split-K reduce launch over `partials` (accumulator, max, sum) into `out`."""
    head_dim_pad = max(16, next_pow2(head_dim))
    return prepare(
        _REDUCE, (out.shape[0], out.shape[1], 1),
        (out, *partials, context_lens), (split_len, splits, out.stride(0), out.stride(1), *p_strides),
        (head_dim, head_dim_pad, min(next_pow2(splits), MAX_SPLITS), interpreting, pdl),
        (("num_warps", 4 if head_dim_pad >= 128 else 2),) + ((("launch_pdl", True),) if pdl else ()))
