"""Triton kernels of paged_decode: the split attention pass and the split-K reduce.

Grid of the attention pass: (sequence, KV head, split). A program loads each
K/V tile of its KV head once and uses it for every query head of the GQA group
through one tl.dot (the group padded to the 16 rows tl.dot needs), so GQA costs
no extra KV reads. A tile spans BLOCK_N tokens that may lie on several pages:
every token finds its block through the block table. Cache offsets are int64
(block_id * block_stride overflows int32 on big caches). Softmax is online in
float32 with exp2 (the log2(e) factor folded into the scale).

Split-K partials are merged either by the split kernel itself (FUSED_REDUCE:
the last program of a (sequence, KV head) to finish, found by an atomic ticket,
merges every split of its heads: one launch per call) or by the reduce kernel
(a second launch, with programmatic dependent launch on sm_90+).

Quantised caches are read as stored (1 byte per value) and up-cast in
registers, to float16 for bf16/fp16 queries (kernels/README.md says how and
why); the per-token K scale multiplies the score column and the V scale the
probability column, which equals dequantising K and V first.
"""
from __future__ import annotations

import triton
import triton.language as tl

from kernels.pdl import gdc_launch_dependents, gdc_wait
from kernels.triton_compat import byte_to_fp16_asm, dot_operand, gpu_fence, pow2_normalise_rows, to_output


@triton.jit
def decode_split_kernel(
    q_ptr, cache_ptr, scales_ptr, tables_ptr, lens_ptr, out_ptr, part_acc_ptr, part_m_ptr, part_l_ptr, tickets_ptr,
    qk_scale, split_len,
    stride_qb, stride_qh, stride_ob, stride_oh,
    stride_cb, stride_ckv, stride_cs, stride_ch,
    stride_sb, stride_skv, stride_ss, stride_sh,
    stride_tb, stride_pb, stride_ph, stride_ps,
    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, QUANT: tl.constexpr, QUANT_F16: tl.constexpr,
    IS_INT8: tl.constexpr, SPLIT: tl.constexpr, FUSED_REDUCE: tl.constexpr, GROUP_P2: tl.constexpr,
    REDUCE_CHUNK: tl.constexpr,
    DOT_FP32: tl.constexpr, DOT_PRECISION: tl.constexpr, INTERPRET: tl.constexpr, PDL: tl.constexpr,
):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    ctx = tl.load(lens_ptr + seq)
    start = split * split_len
    end = tl.minimum(start + split_len, ctx)

    g = tl.arange(0, GROUP_PAD)
    d = tl.arange(0, HEAD_DIM_PAD)
    heads = kv_head * GROUP + g
    if HEAD_DIM == HEAD_DIM_PAD:
        gd_mask = (g < GROUP)[:, None]
    else:
        gd_mask = (g < GROUP)[:, None] & (d < HEAD_DIM)[None, :]
    q = tl.load(q_ptr + seq * stride_qb + heads[:, None] * stride_qh + d[None, :], mask=gd_mask, other=0.0)
    if QUANT_F16:
        # 1-byte K/V become float16 operands (fp8: one hardware cvt per pair; int8:
        # exact integers) instead of bf16, whose fp8 path costs an extra per-element
        # F2F that bounded the kernel. The query joins them in float16, each row
        # scaled by a power of two so its largest |value| lies in [1, 2): exact for
        # bf16 values, and bf16's wider range cannot overflow float16.
        dot_dtype = tl.float16
        q_row_scale, q = pow2_normalise_rows(q.to(tl.float32))
        q = q.to(tl.float16)
    else:
        dot_dtype = q.dtype
    q = dot_operand(q, dot_dtype, DOT_FP32)

    m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM_PAD], tl.float32)
    k_base = cache_ptr + kv_head * stride_ch
    v_base = k_base + stride_ckv
    table = tables_ptr + seq * stride_tb
    for tile in range(start, end, BLOCK_N):
        tok = tile + tl.arange(0, BLOCK_N)
        t_mask = tok < end
        block = tl.load(table + tok // BLOCK_SIZE, mask=t_mask, other=0).to(tl.int64)
        slot_off = block * stride_cb + (tok % BLOCK_SIZE) * stride_cs       # int64 [BLOCK_N]
        if HEAD_DIM == HEAD_DIM_PAD:
            kv_mask = t_mask[:, None]
        else:
            kv_mask = t_mask[:, None] & (d < HEAD_DIM)[None, :]
        k = tl.load(k_base + slot_off[:, None] + d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_base + slot_off[:, None] + d[None, :], mask=kv_mask, other=0.0)
        if QUANT_F16 and not DOT_FP32:
            k = byte_to_fp16_asm(k, IS_INT8)
            # fp8 V through the fence (float16 before its shared-memory transpose): 206.6 against
            # 215.1 us at B=64 L=4096 on the H200; int8 stays pure (the fenced K and V together
            # were slower for both: see byte_to_fp16_asm).
            v = byte_to_fp16_asm(v, IS_INT8, PURE=IS_INT8)
        k = dot_operand(k, dot_dtype, DOT_FP32)
        v = dot_operand(v, dot_dtype, DOT_FP32)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION)         # [GROUP_PAD, BLOCK_N]
        if QUANT:
            s_off = block * stride_sb + (tok % BLOCK_SIZE) * stride_ss + kv_head * stride_sh
            k_scale = tl.load(scales_ptr + s_off, mask=t_mask, other=0.0)
            v_scale = tl.load(scales_ptr + stride_skv + s_off, mask=t_mask, other=0.0)
            s = s * (k_scale * qk_scale)[None, :]
            if QUANT_F16:
                s = s * q_row_scale[:, None]
        else:
            s = s * qk_scale
        s = tl.where(t_mask[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if QUANT_F16:
            # V scales go on the probability columns, divided by the tile's largest
            # so p * scale stays in [0, 1] and clear of float16's subnormals.
            v_top = tl.max(v_scale, axis=0)                                  # > 0: scales >= 1e-6 / qmax
            p = p * (v_scale * (1.0 / v_top))[None, :]
            pv = tl.dot(dot_operand(p, dot_dtype, DOT_FP32), v, input_precision=DOT_PRECISION) * v_top
            acc = acc * alpha[:, None] + pv
        else:
            if QUANT:
                p = p * v_scale[None, :]
            acc = acc * alpha[:, None] + tl.dot(dot_operand(p, dot_dtype, DOT_FP32), v,
                                                input_precision=DOT_PRECISION)
        m_i = m_new

    if PDL:
        gdc_launch_dependents()        # the reduce may start; it waits for these stores in-kernel
    if SPLIT:
        # Unnormalised partials; an empty split leaves m=-inf, l=0, acc=0.
        p_off = seq * stride_pb + heads * stride_ph + split * stride_ps
        tl.store(part_acc_ptr + p_off[:, None] * HEAD_DIM_PAD + d[None, :], acc, mask=(g < GROUP)[:, None])
        tl.store(part_m_ptr + p_off, m_i, mask=g < GROUP)
        tl.store(part_l_ptr + p_off, l_i, mask=g < GROUP)
        if FUSED_REDUCE:
            _merge_if_last(out_ptr, part_acc_ptr, part_m_ptr, part_l_ptr, tickets_ptr, seq, kv_head, ctx, split_len,
                           stride_ob, stride_oh, stride_pb, stride_ph, stride_ps,
                           GROUP, GROUP_P2, HEAD_DIM, HEAD_DIM_PAD, REDUCE_CHUNK, INTERPRET)
    else:
        o = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]                     # context 0 -> zeros
        o_ptrs = out_ptr + seq * stride_ob + heads[:, None] * stride_oh + d[None, :]
        tl.store(o_ptrs, to_output(o, out_ptr.dtype.element_ty, INTERPRET), mask=gd_mask)


@triton.jit
def _merge_splits(part_acc_ptr, part_m_ptr, part_l_ptr, base, used, stride_ps,
                  HEAD_DIM_PAD: tl.constexpr, CHUNK: tl.constexpr):
    """One query head's output [HEAD_DIM_PAD] from its first `used` split partials
    at `base` (float32, unnormalised). Splits are read CHUNK at a time, each lane
    keeping its own running max / sum / accumulator; a forced num_splits in the
    thousands then costs passes, not a [splits, head_dim] tile that no register
    file holds."""
    lane = tl.arange(0, CHUNK)
    d = tl.arange(0, HEAD_DIM_PAD)
    m_run = tl.full([CHUNK], float("-inf"), tl.float32)
    l_run = tl.zeros([CHUNK], tl.float32)
    acc_run = tl.zeros([CHUNK, HEAD_DIM_PAD], tl.float32)
    for first in range(0, used, CHUNK):
        sp = first + lane
        s_mask = sp < used
        p_off = base + sp * stride_ps
        m = tl.load(part_m_ptr + p_off, mask=s_mask, other=float("-inf"))
        l = tl.load(part_l_ptr + p_off, mask=s_mask, other=0.0)
        acc = tl.load(part_acc_ptr + p_off[:, None] * HEAD_DIM_PAD + d[None, :], mask=s_mask[:, None], other=0.0)
        m_new = tl.maximum(m_run, m)
        m_safe = tl.where(m_new > float("-inf"), m_new, 0.0)          # empty so far: weights 0, not NaN
        alpha = tl.exp2(m_run - m_safe)
        beta = tl.exp2(m - m_safe)
        l_run = l_run * alpha + l * beta
        acc_run = acc_run * alpha[:, None] + acc * beta[:, None]
        m_run = m_new
    m_max = tl.max(m_run, axis=0)
    m_max = tl.where(m_max > float("-inf"), m_max, 0.0)                 # all empty: weights 0
    w = tl.exp2(m_run - m_max)
    l_sum = tl.sum(w * l_run, axis=0)
    return tl.sum(acc_run * w[:, None], axis=0) / tl.where(l_sum > 0, l_sum, 1.0)


@triton.jit
def _merge_if_last(out_ptr, part_acc_ptr, part_m_ptr, part_l_ptr, tickets_ptr, seq, kv_head, ctx, split_len,
                   stride_ob, stride_oh, stride_pb, stride_ph, stride_ps,
                   GROUP: tl.constexpr, GROUP_P2: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr,
                   CHUNK: tl.constexpr, INTERPRET: tl.constexpr):
    """Called by every split program after storing its partials: the last of the
    (sequence, KV head)'s programs to arrive merges all splits of its GROUP heads
    at once ([group, CHUNK splits, head_dim] per pass, so the usual split counts
    take one round trip to L2) and resets the ticket counter to 0 for the next
    call (it starts zeroed).

    Ordering: each thread's partial stores, a gpu-scope fence, a block barrier,
    then one acq_rel ticket (the pattern of CUDA's grid sync); the merging program
    fences again and reads the partials from L2 (.cg), never a stale L1 line of a
    previous call. Splits merge in split order whoever arrives last: the result
    does not depend on scheduling."""
    num_splits = tl.num_programs(2)
    if not INTERPRET:
        gpu_fence()
    tl.debug_barrier()
    ticket_ptr = tickets_ptr + seq * tl.num_programs(1) + kv_head
    ticket = tl.atomic_add(ticket_ptr, 1, sem="acq_rel", scope="gpu")
    if ticket == num_splits - 1:
        if not INTERPRET:
            gpu_fence()
        used = tl.minimum(tl.cdiv(ctx, split_len), num_splits)
        g = tl.arange(0, GROUP_P2)
        lane = tl.arange(0, CHUNK)
        d = tl.arange(0, HEAD_DIM_PAD)
        rows = seq * stride_pb + (kv_head * GROUP + g) * stride_ph                  # [G]
        m_run = tl.full([GROUP_P2], float("-inf"), tl.float32)
        l_run = tl.zeros([GROUP_P2], tl.float32)
        acc_run = tl.zeros([GROUP_P2, HEAD_DIM_PAD], tl.float32)
        for first in range(0, used, CHUNK):
            sp = first + lane
            mask = (g < GROUP)[:, None] & (sp < used)[None, :]                       # [G, C]
            off = rows[:, None] + sp[None, :] * stride_ps
            m = tl.load(part_m_ptr + off, mask=mask, other=float("-inf"), cache_modifier=".cg")
            l = tl.load(part_l_ptr + off, mask=mask, other=0.0, cache_modifier=".cg")
            acc = tl.load(part_acc_ptr + off[:, :, None] * HEAD_DIM_PAD + d[None, None, :], mask=mask[:, :, None],
                          other=0.0, cache_modifier=".cg")                           # [G, C, D]
            m_new = tl.maximum(m_run, tl.max(m, axis=1))
            m_safe = tl.where(m_new > float("-inf"), m_new, 0.0)                     # empty so far: weights 0
            alpha = tl.exp2(m_run - m_safe)
            beta = tl.exp2(m - m_safe[:, None])                                      # [G, C]
            l_run = l_run * alpha + tl.sum(l * beta, axis=1)
            acc_run = acc_run * alpha[:, None] + tl.sum(acc * beta[:, :, None], axis=1)
            m_run = m_new
        o = acc_run / tl.where(l_run > 0, l_run, 1.0)[:, None]                       # context 0 -> zeros
        heads = kv_head * GROUP + g
        tl.store(out_ptr + seq * stride_ob + heads[:, None] * stride_oh + d[None, :],
                 to_output(o, out_ptr.dtype.element_ty, INTERPRET), mask=(g < GROUP)[:, None] & (d < HEAD_DIM)[None, :])
        tl.atomic_xchg(ticket_ptr, 0, sem="relaxed", scope="gpu")


@triton.jit
def decode_reduce_kernel(
    out_ptr, part_acc_ptr, part_m_ptr, part_l_ptr, lens_ptr,
    split_len, num_splits,
    stride_ob, stride_oh, stride_pb, stride_ph, stride_ps,
    HEAD_DIM: tl.constexpr, HEAD_DIM_PAD: tl.constexpr, CHUNK: tl.constexpr,
    INTERPRET: tl.constexpr, PDL: tl.constexpr,
):
    """One program per (sequence, query head): merge the splits that hold tokens
    (the launcher makes CHUNK cover every split the heuristic picks: one pass)."""
    seq = tl.program_id(0)
    head = tl.program_id(1)
    ctx = tl.load(lens_ptr + seq)                # written before the attention pass: no wait
    used = tl.minimum(tl.cdiv(ctx, split_len), num_splits)
    if PDL:
        gdc_wait()                               # the attention pass is done, its partials visible
    d = tl.arange(0, HEAD_DIM_PAD)
    o = _merge_splits(part_acc_ptr, part_m_ptr, part_l_ptr, seq * stride_pb + head * stride_ph, used, stride_ps,
                      HEAD_DIM_PAD, CHUNK)
    tl.store(out_ptr + seq * stride_ob + head * stride_oh + d, to_output(o, out_ptr.dtype.element_ty, INTERPRET),
             mask=d < HEAD_DIM)
