"""Paged prefill/extend attention: many query tokens per sequence over a paged KV cache.

Flash-attention forward with the keys read through the block table. One program
per (query tile of BLOCK_M rows of one sequence, query head); it loops over KV
tiles of BLOCK_N tokens with an online softmax. The queries are the last
query_len tokens of their context, so query row r sees keys 0 … prefix + r
(prefix = context_len − query_len): KV tiles wholly below the tile's diagonal run
without masks, the few that cross it are masked, and those above it are never
loaded.

Why per query head rather than per KV head with the GQA group packed into the
rows: prefill is compute bound, and the group's other heads run as neighbouring
programs (the head index within the group varies fastest in the grid), so their
K/V tiles come from L2; per-head programs keep the causal mask a plain
row/column compare.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.call_key import call_key
from kernels.launch import Kernel, Prepared, next_pow2, prepare, run_prepared
from kernels.prefill_plan import LAUNCHES_PER_PLAN, PrefillPlan, plan_checked
from kernels.prefill_route import use_sm90
from kernels.triton_compat import LOG2E, dot_operand, is_interpreting, to_output
from kernels.validation import check_attention, check_index_tensors, check_query_start_loc, check_scale



@triton.jit
def _attend(acc, l_i, m_i, q, k_base, v_base, ks_base, vs_base, bt_row, lo, hi, prefix, offs_m, qk_scale,
            stride_cb, stride_cs, stride_sb, stride_ss,
            HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, PAGE: tl.constexpr, BLOCK_N: tl.constexpr,
            MASKED: tl.constexpr, QUANTIZED: tl.constexpr, DOT_DTYPE: tl.constexpr,
            DOT_F32: tl.constexpr, PRECISION: tl.constexpr):
    """Online softmax over the KV tokens [lo, hi). MASKED: apply the causal mask and
    the hi bound (hi <= context_len); unmasked calls get whole tiles below the diagonal."""
    offs_d = tl.arange(0, BLOCK_D)
    d_ok = offs_d < HEAD_DIM
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        n_ok = offs_n < hi
        # Gather token by token: block id from the table, then the slot in the block.
        if MASKED:
            blocks = tl.load(bt_row + offs_n // PAGE, mask=n_ok, other=0)
        else:
            blocks = tl.load(bt_row + offs_n // PAGE)
        slots = offs_n % PAGE
        tok = blocks.to(tl.int64) * stride_cb + slots * stride_cs          # int64: 32k-block caches
        k_ptrs = (k_base + tok)[:, None] + offs_d[None, :]
        v_ptrs = (v_base + tok)[:, None] + offs_d[None, :]
        if MASKED:
            if HEAD_DIM == BLOCK_D:
                kv_mask = n_ok[:, None]
            else:
                kv_mask = n_ok[:, None] & d_ok[None, :]
            k = tl.load(k_ptrs, mask=kv_mask, other=0.0)
            v = tl.load(v_ptrs, mask=kv_mask, other=0.0)
        elif HEAD_DIM == BLOCK_D:
            k = tl.load(k_ptrs)
            v = tl.load(v_ptrs)
        else:
            k = tl.load(k_ptrs, mask=d_ok[None, :], other=0.0)
            v = tl.load(v_ptrs, mask=d_ok[None, :], other=0.0)
        qk = tl.dot(q, tl.trans(dot_operand(k, DOT_DTYPE, DOT_F32)), input_precision=PRECISION)
        if QUANTIZED:
            # int8/fp8 values are exact in the dot dtype, so the per-token scales
            # can multiply score columns (K) and probability columns (V) instead
            # of every element of the K and V tiles.
            s_off = blocks.to(tl.int64) * stride_sb + slots * stride_ss
            ks = tl.load(ks_base + s_off, mask=n_ok, other=0.0)
            vs = tl.load(vs_base + s_off, mask=n_ok, other=0.0)
            qk = qk * (ks * qk_scale)[None, :]
            if MASKED:
                qk = tl.where((offs_n[None, :] <= prefix + offs_m[:, None]) & n_ok[None, :], qk, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            p = tl.math.exp2(qk - m_new[:, None])
        else:
            if MASKED:
                qk = tl.where((offs_n[None, :] <= prefix + offs_m[:, None]) & n_ok[None, :], qk, float("-inf"))
            # The softmax scale rides on the max and on one fused multiply-add.
            m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
            p = tl.math.exp2(qk * qk_scale - m_new[:, None])
        # Every row sees key 0 in its first tile, so m_new is finite from the start.
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        if QUANTIZED:
            p = p * vs[None, :]
        acc = tl.dot(dot_operand(p, DOT_DTYPE, DOT_F32), dot_operand(v, DOT_DTYPE, DOT_F32), acc,
                     input_precision=PRECISION)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _paged_prefill_kernel(
        q_ptr, kv_ptr, scales_ptr, out_ptr, bt_ptr, qsl_ptr, ctx_ptr, tile_map_ptr,
        qk_scale, max_tiles, num_heads,
        stride_qt, stride_qh, stride_ot, stride_oh,
        stride_cb, stride_ckv, stride_cs, stride_ch,
        stride_sb, stride_skv, stride_ss, stride_sh, stride_bt,
        GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, PAGE: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, QUANTIZED: tl.constexpr,
        DOT_F32: tl.constexpr, INTERPRET: tl.constexpr, PRECISION: tl.constexpr):
    # 1-D grid (axis 0 has no 65535 limit): KV head slowest, then the tile map
    # (sequence by sequence), then the query heads of the KV head's group. The
    # programs running at once read the same sequence's K/V of one KV head, which
    # so stays in L2 (prefill_plan.build_tile_map says what the other order cost).
    pid = tl.program_id(0)
    rest = pid // GROUP
    head = (rest // max_tiles) * GROUP + pid % GROUP
    tile = rest % max_tiles
    seq = tl.load(tile_map_ptr + tile)
    if seq < 0:
        return
    m_block = tl.load(tile_map_ptr + max_tiles + tile)
    q_start = tl.load(qsl_ptr + seq)
    q_len = tl.load(qsl_ptr + seq + 1) - q_start
    ctx = tl.load(ctx_ptr + seq)
    prefix = ctx - q_len

    DOT_DTYPE: tl.constexpr = q_ptr.dtype.element_ty   # float32 instead under the interpreter (DOT_F32)
    offs_m = m_block * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < q_len
    io_mask = row_ok[:, None] & (offs_d[None, :] < HEAD_DIM)
    rows = (q_start + offs_m).to(tl.int64)
    q = tl.load(q_ptr + rows[:, None] * stride_qt + head * stride_qh + offs_d[None, :], mask=io_mask, other=0.0)
    q = dot_operand(q, DOT_DTYPE, DOT_F32)

    kv_head = head // GROUP
    k_base = kv_ptr + kv_head * stride_ch
    v_base = k_base + stride_ckv
    ks_base = scales_ptr + kv_head * stride_sh
    vs_base = ks_base + stride_skv
    bt_row = bt_ptr + seq.to(tl.int64) * stride_bt

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    first_row = m_block * BLOCK_M
    # Keys [0, prefix + first_row] are visible to every row of the tile.
    full_end = ((prefix + first_row + 1) // BLOCK_N) * BLOCK_N
    kv_end = tl.minimum(prefix + first_row + BLOCK_M, ctx)
    acc, l_i, m_i = _attend(acc, l_i, m_i, q, k_base, v_base, ks_base, vs_base, bt_row, 0, full_end,
                            prefix, offs_m, qk_scale, stride_cb, stride_cs, stride_sb, stride_ss,
                            HEAD_DIM, BLOCK_D, PAGE, BLOCK_N, False, QUANTIZED, DOT_DTYPE, DOT_F32, PRECISION)
    acc, l_i, m_i = _attend(acc, l_i, m_i, q, k_base, v_base, ks_base, vs_base, bt_row, full_end, kv_end,
                            prefix, offs_m, qk_scale, stride_cb, stride_cs, stride_sb, stride_ss,
                            HEAD_DIM, BLOCK_D, PAGE, BLOCK_N, True, QUANTIZED, DOT_DTYPE, DOT_F32, PRECISION)
    out = acc / l_i[:, None]
    tl.store(out_ptr + rows[:, None] * stride_ot + head * stride_oh + offs_d[None, :],
             to_output(out, out_ptr.dtype.element_ty, INTERPRET), mask=io_mask)


def paged_prefill(query: torch.Tensor, kv_cache: torch.Tensor, block_tables: torch.Tensor,
                  query_start_loc: torch.Tensor, context_lens: torch.Tensor, scale: float,
                  kv_scales: torch.Tensor | None = None, out: torch.Tensor | None = None, *,
                  plan: PrefillPlan | None = None, **tuning: int | str | None) -> torch.Tensor:
    """Causal attention of `query` [T, Hq, D] (varlen by `query_start_loc`, the last
    tokens of each context) over the paged `kv_cache`; returns [T, Hq, D] in the
    query dtype (written into `out` when given).

    `plan` (from `plan_prefill`, once per batch, shared by every layer) skips the
    index checks that sync with the host and the tile-map build; without it they
    run here. A plan is only valid for the query_start_loc, context_lens and
    block_tables contents it was built from (only their sizes are re-checked). A
    repeat call on a plan with tensors of the metadata of a call it already
    launched (every layer after the first) replays that launch without the
    argument checks, which passed for that metadata (kernels/call_key.py). `tuning`
    overrides `prefill_config` (block_m, block_n, num_warps, num_stages, and
    kernel: "auto" / "triton" / "sm90", kernels/prefill_route.py) when no plan is
    given. On an sm_90 device "auto" runs kernels/prefill_sm90.py's Gluon kernel
    wherever it can.
    """
    interpreting = is_interpreting()
    key = None
    if plan is not None and not tuning:
        # A repeat of a call this plan launched (the next layer): same metadata, so the
        # same checks would pass and the same launch follow (kernels/call_key.py).
        key = call_key((query, kv_cache, block_tables, query_start_loc, context_lens, kv_scales, out),
                       (scale, interpreting))
        prepared = None if key is None else plan.launches.get(key)
        if prepared is not None:
            if out is None:
                out = torch.empty_like(query)
            if type(prepared) is Prepared:
                # Scales were given exactly when the cache is quantised (the checks that passed).
                run_prepared(prepared, (query, kv_cache, kv_cache if kv_scales is None else kv_scales, out,
                                        block_tables, query_start_loc, context_lens, plan.tile_map))
            else:                     # an Sm90Launch (kernels/prefill_route.py chose the sm_90 kernel)
                prepared(query, kv_cache, block_tables, query_start_loc, context_lens, out, plan.tile_map)
            return out
    scale = check_scale(scale)
    shape = check_attention("paged_prefill", query, kv_cache, kv_scales, out, interpreting)
    device = query.device
    num_tokens = query.shape[0]
    num_seqs = check_index_tensors(block_tables, context_lens, None, device)
    check_query_start_loc(query_start_loc, num_seqs, device)
    if out is None:
        out = torch.empty_like(query)
    if plan is None:
        plan = plan_checked(query_start_loc, context_lens, block_tables, num_seqs, num_tokens, shape.num_blocks,
                            shape.block_size, shape.head_dim, query.dtype, device.type == "cuda" and not interpreting,
                            **tuning)
    else:
        if tuning:
            raise ValueError("tuning overrides go to plan_prefill when a plan is given")
        if plan.tile_map.device != device:
            raise ValueError(f"plan's tile map is on {plan.tile_map.device}, query on {device}")
        if (plan.num_tokens, plan.num_seqs) != (num_tokens, num_seqs):
            raise ValueError(f"plan was built for {plan.num_tokens} tokens / {plan.num_seqs} sequences, "
                             f"got {num_tokens} / {num_seqs}")
    if num_tokens == 0 or num_seqs == 0:
        return out

    cfg = plan.config
    quantized = shape.quantized
    max_tiles = plan.tile_map.shape[1]
    if use_sm90(cfg.kernel, query, kv_cache, quantized, cfg.block_m, interpreting):
        from kernels.prefill_sm90_launch import Sm90Launch   # Gluon: imported only where it runs
        launch = Sm90Launch(query, kv_cache, block_tables, out, scale, max_tiles)
        if key is not None and len(plan.launches) < LAUNCHES_PER_PLAN:
            plan.launches[key] = launch
        launch(query, kv_cache, block_tables, query_start_loc, context_lens, out, plan.tile_map)
        return out
    s_strides = kv_scales.stride() if quantized else (0, 0, 0, 0)
    num_heads = shape.num_heads
    q_strides, o_strides = query.stride(), out.stride()
    ptrs = (query, kv_cache, kv_scales if quantized else kv_cache, out, block_tables, query_start_loc,
            context_lens, plan.tile_map)
    prepared = prepare(_PREFILL, (max_tiles * num_heads, 1, 1), ptrs,
                       (scale * LOG2E, max_tiles, num_heads, q_strides[0], q_strides[1], o_strides[0], o_strides[1],
                        *kv_cache.stride()[:4], *s_strides, block_tables.stride(0)),
                       (num_heads // shape.num_kv_heads, shape.head_dim, max(16, next_pow2(shape.head_dim)),
                        shape.block_size, cfg.block_m, cfg.block_n, quantized, interpreting, interpreting,
                        "ieee" if (interpreting or query.dtype == torch.float32) else "tf32"),
                       (("num_warps", cfg.num_warps), ("num_stages", cfg.num_stages)))
    if key is not None and len(plan.launches) < LAUNCHES_PER_PLAN:
        plan.launches[key] = prepared
    run_prepared(prepared, ptrs)
    return out


_PREFILL = Kernel(_paged_prefill_kernel, "GROUP", "HEAD_DIM", "BLOCK_D", "PAGE", "BLOCK_M", "BLOCK_N", "QUANTIZED",
                  "DOT_F32", "INTERPRET", "PRECISION")
