"""Decode over an fp8 (e4m3) or int8 cache with no shared memory: a Gluon kernel (sm_89+).

The Triton decode kernel up-casts each 1-byte K/V value to float16 for its tl.dot,
and Triton routes the 1-byte V tile through shared memory one byte at a time to
transpose it: that, not the bytes read, bounds it (kernels/README.md, "Quantised
caches"). Here every byte goes from a 16-byte global load to the tensor cores in
registers:

- One warp per program (sequence, KV head, split) over 16- or 32-token tiles; the
  next tile's K/V (or the next two, DEPTH 2) is loaded as packed 4-byte words before
  this tile's arithmetic (64 registers for a 32-token tile; carried as bytes it would
  take 256 and spill).
- Each word becomes four float16 values, exactly: fp8 by two paired hardware
  converts (sm_89+), int8 by placing byte + 128 under float16's exponent of 1024
  and subtracting 1152 (one xor, two byte permutes, two paired subtracts). The
  products are float16 `mma.sync` (m16n8k16) with float32 sums, and the query is
  float16 after scaling each row by a power of two so its largest |value| lies in
  [1, 2) (exact for bf16 values): the float16 path's numbers.
- The operand layouts the mma wants are reached without moving data between
  threads: the head dimension of the query and K is permuted (a dot product does not
  care in which order it sums, as long as both agree) so that a thread's 32
  contiguous K bytes are its k-values, and V's head dimension so that a thread's 16
  contiguous V bytes are its n-values; each permutation is a reshape + permute the
  compiler checks to be free (`convert_layout(..., assert_trivial=True)`). The
  output's head-dim order is undone once, at the end. V's tokens pair up in
  registers with one permute per output register.
- The K scale multiplies score columns; the V scale, over the tile's largest,
  multiplies probability columns, and the accumulator is kept in units of that
  largest (rescaled with the softmax's own correction).
- Every program writes split partials in paged_decode's format. Up to the plan's FUSED_MAX_SPLITS
  splits, the last program of each (sequence, KV head) to finish merges them (an
  atomic ticket, as the Triton kernel's fused merge): one launch a call. Past that,
  or with pdl=True, the Triton reduce kernel (kernels/decode_kernels.py) merges them.

Limits: head_dim 128, GQA group <= 16, bf16/fp16 queries, cache strides in
whole 4-byte words. Its launches are planned in kernels/decode_quant_mma_plan.py;
paged_decode runs it where kernels/decode_route.py says so;
bench/probe_decode_quant_mma.py sweeps its schedules and splits.
"""
from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.ampere import mma_v2


MAX_GROUP = 16                   # the mma's rows: GQA group <= 16
DIM = 128                        # the one head_dim it takes
HEAD_DIM = gl.constexpr(DIM)     # the kernels' names for them
ROWS = gl.constexpr(MAX_GROUP)
_cta_barrier = getattr(gl, "thread_barrier", None) or gl.barrier        # triton 3.9 renamed it


@gluon.jit
def _k_order(x):
    """[R, 128] in memory order of the head dim -> the mma's k order (r*8 + l*2 + e for
    d = l*32 + r*2 + e): a thread's 32 contiguous values become its k-values."""
    R: gl.constexpr = x.shape[0]
    x = gl.reshape(x, [R, 4, 16, 2])
    x = gl.permute(x, [0, 2, 1, 3])
    return gl.reshape(x, [R, 128])


@gluon.jit
def _e4m3x4_to_f16(words):
    """int32 words of 4 e4m3 bytes -> float16 [..., 4] in byte order: two paired
    hardware converts per word, straight from the loaded register."""
    h0, h1, h2, h3 = gl.inline_asm_elementwise(
        """{
        .reg .b16 lo, hi;
        .reg .b32 a, b;
        mov.b32 {lo, hi}, $4;
        cvt.rn.f16x2.e4m3x2 a, lo;
        cvt.rn.f16x2.e4m3x2 b, hi;
        mov.b32 {$0, $1}, a;
        mov.b32 {$2, $3}, b;
        }""",
        "=h,=h,=h,=h,r", [words], dtype=(gl.float16, gl.float16, gl.float16, gl.float16), is_pure=True, pack=1)
    both = gl.join(gl.join(h0, h1), gl.join(h2, h3))          # [..., i, j] holds byte 2j + i
    return gl.permute(both, [0, 1, 2, 4, 3])


@gluon.jit
def _int8x4_to_f16(words):
    """int32 words of 4 int8 bytes -> float16 [..., 4] in byte order, exactly: each
    byte + 128 goes under float16's exponent of 1024 (one byte permute per pair),
    then 1152 comes off (one paired subtract)."""
    h0, h1, h2, h3 = gl.inline_asm_elementwise(
        """{
        .reg .b32 u, a, b, c;
        xor.b32 u, $4, 0x80808080;
        prmt.b32 a, u, 0x64646464, 0x4140;
        prmt.b32 b, u, 0x64646464, 0x4342;
        mov.b32 c, 0x64806480;
        sub.f16x2 a, a, c;
        sub.f16x2 b, b, c;
        mov.b32 {$0, $1}, a;
        mov.b32 {$2, $3}, b;
        }""",
        "=h,=h,=h,=h,r", [words], dtype=(gl.float16, gl.float16, gl.float16, gl.float16), is_pure=True, pack=1)
    both = gl.join(gl.join(h0, h1), gl.join(h2, h3))
    return gl.permute(both, [0, 1, 2, 4, 3])


@gluon.jit
def _bytes_to_f16(words, IS_INT8: gl.constexpr):
    if IS_INT8:
        return _int8x4_to_f16(words)
    else:
        return _e4m3x4_to_f16(words)


@gluon.jit
def _load_rows(base, table, tile, end, stride_cb, stride_cs, BLOCK_SIZE: gl.constexpr, TILE: gl.constexpr,
               CHUNKS: gl.constexpr, WORDS: gl.constexpr, layout: gl.constexpr):
    """[TILE, CHUNKS, WORDS] int32 words of one head's K or V rows (CHUNKS x WORDS = 32
    words = 128 bytes a token) for tokens tile..tile+TILE-1, each found through the
    block table; tokens at or past `end` read as 0 (they may never have been written)."""
    t = tile + gl.arange(0, TILE, layout=gl.SliceLayout(1, gl.SliceLayout(2, layout)))
    block = gl.load(table + t // BLOCK_SIZE, mask=t < end, other=0).to(gl.int64)
    row = block * stride_cb + (t % BLOCK_SIZE) * stride_cs
    chunk = gl.arange(0, CHUNKS, layout=gl.SliceLayout(0, gl.SliceLayout(2, layout)))
    word = gl.arange(0, WORDS, layout=gl.SliceLayout(0, gl.SliceLayout(1, layout)))
    off = row[:, None, None] + (chunk[None, :, None] * WORDS + word[None, None, :])
    return gl.load(base + off, mask=(t < end)[:, None, None], other=0)


@gluon.jit
def _load_tile(k_base, v_base, scale_base, table, tile, end, stride_cb, stride_cs, stride_sb, stride_ss, stride_skv,
               BLOCK_SIZE: gl.constexpr, TILE: gl.constexpr, k_layout: gl.constexpr, v_layout: gl.constexpr,
               col_layout: gl.constexpr):
    """K [TILE, 4, 8] and V [TILE, 8, 4] int32 words (4 cache bytes each) of tokens
    tile..tile+TILE-1 in memory order (strides in words), and their K and V scales in
    the layout of a score row. Tokens at or past `end` read as 0 (they may never
    have been written)."""
    k = _load_rows(k_base, table, tile, end, stride_cb, stride_cs, BLOCK_SIZE, TILE, 4, 8, k_layout)
    v = _load_rows(v_base, table, tile, end, stride_cb, stride_cs, BLOCK_SIZE, TILE, 8, 4, v_layout)
    tok = tile + gl.arange(0, TILE, layout=col_layout)
    live = tok < end
    blk = gl.load(table + tok // BLOCK_SIZE, mask=live, other=0).to(gl.int64)
    s_off = blk * stride_sb + (tok % BLOCK_SIZE) * stride_ss
    k_scale = gl.load(scale_base + s_off, mask=live, other=0.0)
    v_scale = gl.load(scale_base + stride_skv + s_off, mask=live, other=0.0)
    return k, v, k_scale, v_scale


@gluon.jit
def _attend_tile(q_op, k_words, v_words, k_scale, v_scale, tile, end, m_i, l_i, acc, f_prev, row_scale, zeros_s,
                 IS_INT8: gl.constexpr, TILE: gl.constexpr, a_layout: gl.constexpr, b_layout: gl.constexpr,
                 col_layout: gl.constexpr):
    """One tile's scores, online softmax and P.V; returns the running max, sum,
    accumulator and the accumulator's unit (the tile's largest V scale)."""
    k16 = gl.reshape(_bytes_to_f16(k_words, IS_INT8), [TILE, HEAD_DIM])
    kt = gl.convert_layout(gl.permute(_k_order(k16), [1, 0]), b_layout, assert_trivial=True)
    s = mma_v2(q_op, kt, zeros_s)

    live = tile + gl.arange(0, TILE, layout=col_layout) < end
    s = s * row_scale[:, None] * k_scale[None, :]
    s = gl.where(live[None, :], s, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(s, axis=1))
    alpha = gl.exp2(m_i - m_new)
    p = gl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + gl.sum(p, axis=1)

    # P's columns carry the V scales, over the tile's largest (p * scale stays in [0, 1],
    # clear of float16's subnormals); the accumulator is kept in units of that largest.
    v_top = gl.max(v_scale, axis=0)
    p = p * (v_scale * (1.0 / v_top))[None, :]
    p_op = gl.convert_layout(p.to(gl.float16), a_layout, assert_trivial=True)
    v16 = gl.reshape(_bytes_to_f16(v_words, IS_INT8), [TILE, 8, 16])
    v16 = gl.reshape(gl.permute(v16, [0, 2, 1]), [TILE, HEAD_DIM])
    acc = acc * (alpha * (f_prev / v_top))[:, None]
    acc = mma_v2(p_op, gl.convert_layout(v16, b_layout, assert_trivial=True), acc)
    return m_new, l_i, acc, v_top


@gluon.jit
def _gpu_fence():
    """fence.acq_rel.gpu in every thread: orders its memory accesses for the whole GPU."""
    gl.inline_asm_elementwise("fence.acq_rel.gpu; mov.u32 $0, 0;", "=r", [], dtype=gl.int32, is_pure=False, pack=1)


@gluon.jit
def _merge_split(m_run, l_run, acc_run, part_acc_ptr, part_m_ptr, part_l_ptr, off, live, d):
    """Fold one split's partials at offsets `off` (rows `live`) into the running merge."""
    m = gl.load(part_m_ptr + off, mask=live, other=float("-inf"), cache_modifier=".cg")
    l = gl.load(part_l_ptr + off, mask=live, other=0.0, cache_modifier=".cg")
    acc = gl.load(part_acc_ptr + off.to(gl.int64)[:, None] * HEAD_DIM + d[None, :], mask=live[:, None], other=0.0,
                  cache_modifier=".cg")
    m_new = gl.maximum(m_run, m)
    m_safe = gl.where(m_new > float("-inf"), m_new, 0.0)                  # empty so far: weights 0, not NaN
    alpha = gl.exp2(m_run - m_safe)
    beta = gl.exp2(m - m_safe)
    return m_new, l_run * alpha + l * beta, acc_run * alpha[:, None] + acc * beta[:, None]


@gluon.jit
def _merge_if_last(out_ptr, part_acc_ptr, part_m_ptr, part_l_ptr, tickets_ptr, seq, kv_head, ctx, split_len,
                   stride_ob, stride_oh, p_rows, stride_ps, g, d, GROUP: gl.constexpr, row_layout: gl.constexpr,
                   q_layout: gl.constexpr):
    """Called by every program after storing its partials: the last of a (sequence, KV
    head)'s splits to arrive merges them into `out` and resets the ticket to 0 for the
    next call (kernels/decode_kernels.py's fused merge, same ordering: each thread's
    stores, a gpu-scope fence, a barrier, one acq_rel ticket; the merging program fences
    again and reads the partials from L2). Splits merge in split order, two at a time
    (both loads in flight), whoever arrives last: the result does not depend on scheduling."""
    num_splits = gl.num_programs(2)
    _gpu_fence()
    _cta_barrier()
    ticket_ptr = tickets_ptr + seq * gl.num_programs(1) + kv_head
    ticket = gl.atomic_add(ticket_ptr, 1, sem="acq_rel", scope="gpu")
    if ticket == num_splits - 1:
        _gpu_fence()
        used = gl.minimum(gl.cdiv(ctx, split_len), num_splits)
        live = g < GROUP
        m_run = gl.full([ROWS], float("-inf"), gl.float32, row_layout)
        l_run = gl.zeros([ROWS], gl.float32, row_layout)
        acc_run = gl.zeros([ROWS, HEAD_DIM], gl.float32, q_layout)
        for first in range(0, used, 2):
            m_run, l_run, acc_run = _merge_split(m_run, l_run, acc_run, part_acc_ptr, part_m_ptr, part_l_ptr,
                                                 p_rows + first * stride_ps, live, d)
            m_run, l_run, acc_run = _merge_split(m_run, l_run, acc_run, part_acc_ptr, part_m_ptr, part_l_ptr,
                                                 p_rows + (first + 1) * stride_ps, live & (first + 1 < used), d)
        o = acc_run / gl.where(l_run > 0, l_run, 1.0)[:, None]                  # context 0 -> zeros
        gl.store(out_ptr + seq * stride_ob + (kv_head * GROUP + g)[:, None] * stride_oh + d[None, :],
                 o.to(out_ptr.dtype.element_ty), mask=live[:, None])
        gl.atomic_xchg(ticket_ptr, 0, sem="relaxed", scope="gpu")


@gluon.jit
def decode_quant_mma_kernel(q_ptr, cache_ptr, scales_ptr, tables_ptr, lens_ptr, out_ptr, part_acc_ptr, part_m_ptr,
                            part_l_ptr, tickets_ptr, qk_scale, split_len,
                            stride_qb, stride_qh, stride_ob, stride_oh, stride_cb, stride_ckv, stride_cs, stride_ch,
                            stride_sb, stride_skv, stride_ss, stride_sh, stride_tb, stride_pb, stride_ph, stride_ps,
                            GROUP: gl.constexpr, BLOCK_SIZE: gl.constexpr, IS_INT8: gl.constexpr,
                            TILE: gl.constexpr, DEPTH: gl.constexpr, FUSED: gl.constexpr):
    """Grid (sequence, KV head, split), one warp each; partials as paged_decode's split
    pass writes them (float32 accumulator [.., 128], running max in log2 units, sum).
    FUSED: the last split of each (sequence, KV head) merges them into `out` (one launch);
    else out_ptr and tickets_ptr are unused and the Triton reduce merges."""
    seq = gl.program_id(0)
    kv_head = gl.program_id(1)
    split = gl.program_id(2)
    ctx = gl.load(lens_ptr + seq)
    start = split * split_len
    end = gl.minimum(start + split_len, ctx)

    mma: gl.constexpr = gl.NVMMADistributedLayout(version=[2, 0], warps_per_cta=[1, 1], instr_shape=[16, 8])
    a_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=mma, k_width=2)
    b_layout: gl.constexpr = gl.DotOperandLayout(operand_index=1, parent=mma, k_width=2)
    k_layout: gl.constexpr = gl.BlockedLayout([1, 1, 8], [8, 4, 1], [1, 1, 1], [2, 1, 0])
    v_layout: gl.constexpr = gl.BlockedLayout([2, 1, 4], [4, 8, 1], [1, 1, 1], [2, 0, 1])
    q_layout: gl.constexpr = gl.BlockedLayout([1, 4], [8, 4], [1, 1], [1, 0])
    row_layout: gl.constexpr = gl.SliceLayout(1, mma)
    col_layout: gl.constexpr = gl.SliceLayout(0, mma)

    # The query rows of this KV head in float16, each scaled by a power of two so its
    # largest |value| lies in [1, 2) (exact for bf16 values; bf16's range cannot overflow).
    g = gl.arange(0, ROWS, layout=gl.SliceLayout(1, q_layout))
    d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, q_layout))
    q = gl.load(q_ptr + seq * stride_qb + (kv_head * GROUP + g)[:, None] * stride_qh + d[None, :],
                mask=(g < GROUP)[:, None], other=0.0).to(gl.float32)
    top = gl.max(gl.abs(q), axis=1)
    e = ((top.to(gl.int32, bitcast=True) >> 23) & 0xFF) - 127
    e = gl.minimum(gl.maximum(e, -126), 126)
    q_scale = ((e + 127) << 23).to(gl.float32, bitcast=True)                 # 2**e
    q16 = (q * ((127 - e) << 23).to(gl.float32, bitcast=True)[:, None]).to(gl.float16)
    q_op = gl.convert_layout(_k_order(q16), a_layout)
    row_scale = gl.convert_layout(qk_scale * q_scale, row_layout)
    zeros_s = gl.zeros([ROWS, TILE], gl.float32, mma)

    m_i = gl.full([ROWS], float("-inf"), gl.float32, row_layout)
    l_i = gl.zeros([ROWS], gl.float32, row_layout)
    acc = gl.zeros([ROWS, HEAD_DIM], gl.float32, mma)
    f_prev = 1.0
    words = cache_ptr.to(gl.pointer_type(gl.int32), bitcast=True)         # strides are in words
    k_base = words + kv_head * stride_ch
    v_base = k_base + stride_ckv
    table = tables_ptr + seq * stride_tb
    scale_base = scales_ptr + kv_head * stride_sh
    # The next tiles' loads go out before this tile's arithmetic, as packed words (a tile of
    # 32 tokens: 64 registers of K/V): DEPTH tiles ahead.
    k_words, v_words, k_scale, v_scale = _load_tile(k_base, v_base, scale_base, table, start, end, stride_cb,
                                                    stride_cs, stride_sb, stride_ss, stride_skv, BLOCK_SIZE,
                                                    TILE, k_layout, v_layout, col_layout)
    if DEPTH == 1:
        for tile in range(start, end, TILE):
            k_next, v_next, ks_next, vs_next = _load_tile(k_base, v_base, scale_base, table, tile + TILE, end,
                                                          stride_cb, stride_cs, stride_sb, stride_ss, stride_skv,
                                                          BLOCK_SIZE, TILE, k_layout, v_layout, col_layout)
            m_i, l_i, acc, f_prev = _attend_tile(q_op, k_words, v_words, k_scale, v_scale, tile, end, m_i, l_i,
                                                 acc, f_prev, row_scale, zeros_s, IS_INT8, TILE, a_layout,
                                                 b_layout, col_layout)
            k_words, v_words, k_scale, v_scale = k_next, v_next, ks_next, vs_next
    else:
        k_1, v_1, ks_1, vs_1 = _load_tile(k_base, v_base, scale_base, table, start + TILE, end, stride_cb,
                                          stride_cs, stride_sb, stride_ss, stride_skv, BLOCK_SIZE, TILE, k_layout,
                                          v_layout, col_layout)
        for tile in range(start, end, TILE):
            k_2, v_2, ks_2, vs_2 = _load_tile(k_base, v_base, scale_base, table, tile + 2 * TILE, end, stride_cb,
                                              stride_cs, stride_sb, stride_ss, stride_skv, BLOCK_SIZE, TILE,
                                              k_layout, v_layout, col_layout)
            m_i, l_i, acc, f_prev = _attend_tile(q_op, k_words, v_words, k_scale, v_scale, tile, end, m_i, l_i,
                                                 acc, f_prev, row_scale, zeros_s, IS_INT8, TILE, a_layout,
                                                 b_layout, col_layout)
            k_words, v_words, k_scale, v_scale = k_1, v_1, ks_1, vs_1
            k_1, v_1, ks_1, vs_1 = k_2, v_2, ks_2, vs_2

    # Head-dim order back to memory order (column nu holds d = 16 * (nu % 8) + nu // 8).
    o = acc * f_prev
    o = gl.reshape(gl.permute(gl.reshape(o, [ROWS, 16, 8]), [0, 2, 1]), [ROWS, HEAD_DIM])
    o = gl.convert_layout(o, q_layout)
    p_off = seq * stride_pb + (kv_head * GROUP + g) * stride_ph + split * stride_ps
    gl.store(part_acc_ptr + p_off.to(gl.int64)[:, None] * HEAD_DIM + d[None, :], o, mask=(g < GROUP)[:, None])
    gl.store(part_m_ptr + p_off, gl.convert_layout(m_i, gl.SliceLayout(1, q_layout)), mask=g < GROUP)
    gl.store(part_l_ptr + p_off, gl.convert_layout(l_i, gl.SliceLayout(1, q_layout)), mask=g < GROUP)
    if FUSED:
        _merge_if_last(out_ptr, part_acc_ptr, part_m_ptr, part_l_ptr, tickets_ptr, seq, kv_head, ctx, split_len,
                       stride_ob, stride_oh, seq * stride_pb + (kv_head * GROUP + g) * stride_ph, stride_ps, g, d,
                       GROUP, gl.SliceLayout(1, q_layout), q_layout)
