"""Paged prefill on Hopper (sm_90): a Gluon kernel with TMA page loads and async wgmma.

Same contract, grid order and tile map as kernels/paged_prefill.py's Triton
kernel; this one exists because Triton 3.6 cannot overlap the softmax with the
matrix multiplies on sm_90 (kernels/README.md, "Prefill"). Here the schedule is
written out:

- A producer warp (its own warp-specialised partition) copies K/V by TMA, one
  copy per page of the tile (a 128-token tile on pages of 16 is 8 copies of
  [16, head_dim]), into a ring of 3 K and 2 V buffers with ready/empty mbarriers.
  In a partition of its own, the copies cost the consumers no CTA barriers
  (Triton puts one before each TMA copy of a partition).
- Each of the two consumer warpgroups is a partition of its own with 64 of the
  tile's 128 query rows (SPLIT): it issues S_j = Q K_j^T and O += P_{j-1} V_{j-1}
  as async wgmma, waits for S_j only, runs the softmax of tile j while
  P_{j-1} V_{j-1} is still on the tensor cores, then waits for it and rescales O
  (FlashAttention-3's intra-warpgroup overlap), and releases each K/V buffer by
  its own arrival (a buffer is free after both). Apart, the two never meet at a
  barrier: in one partition (SPLIT off) every mbarrier wait and arrive was a
  barrier of all 256 consumer threads in Triton 3.6's lowering (46 % of stalls
  in ncu), and it ran 0.77-0.87x as fast on the H200 (bench/README.md).
  TURNS (off) makes the two alternate their multiplies (FA3's ping-pong): no
  faster there.
- Tiles wholly below the causal diagonal take no mask. The tile that crosses the
  end of the context may hold slots no write filled (any bits, NaN included):
  its scores are masked and its V rows past the context are zeroed in shared
  memory before P·V, because 0 * NaN is NaN.

Limits (kernels/prefill_route.py checks them and routes the rest to the Triton
kernel): bf16/fp16 queries and cache, head_dim 64 or 128, page size >= 16, and
a cache whose slot rows are uniformly strided (any per-layer view of one
engine-wide tensor is).
"""
from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)


# Triton 3.6 (the GPU machine) names the TMA load async_copy_global_to_shared; later ones
# (3.9, the CPU machines' compile test) async_load.
_tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
_cta_barrier = getattr(gl, "thread_barrier", None) or gl.barrier          # 3.9 renamed it too

K_STAGES = gl.constexpr(3)
V_STAGES = gl.constexpr(2)
PRODUCER_WARPS = gl.constexpr(1)
PRODUCER_REGS = gl.constexpr(48)
SPLIT_CONSUMER_REGS = gl.constexpr(232)    # the second warpgroup's partition (SPLIT): 2 x 128 x 232 + 128 x 48 fits


@gluon.jit
def _issue_tile(desc, bar, smem, bt_row, tile, last_page, kv: gl.constexpr, PAGES: gl.constexpr,
                ROWS: gl.constexpr, PAGE: gl.constexpr, BLOCK_N: gl.constexpr, col):
    """TMA the K (kv=0) or V (kv=1) rows of KV tile `tile` into `smem`, one copy per
    page (pages past the context's last are clamped to it: masked, but a real block)."""
    mbarrier.expect(bar, BLOCK_N * desc.block_type.nbytes // ROWS)
    for p in gl.static_range(PAGES):
        tok = tile * BLOCK_N + p * ROWS
        block = gl.load(bt_row + gl.minimum(tok // PAGE, last_page))
        row = (block * 2 + kv) * PAGE + tok % PAGE
        _tma_load(desc, [row, col], bar, smem.slice(p * ROWS, ROWS))


@gluon.jit
def _producer(kv_desc, k_smem, v_smem, k_ready, k_empty, v_ready, v_empty, bt_row, last_page, n_tiles, col,
              PAGES: gl.constexpr, ROWS: gl.constexpr, PAGE: gl.constexpr, BLOCK_N: gl.constexpr):
    """One warp: K and V of every tile in order, each into its ring buffer once the
    consumer has released that buffer (a fresh barrier's wait on parity 1 passes)."""
    for j in range(n_tiles):
        ks = j % K_STAGES
        mbarrier.wait(k_empty.index(ks), ((j // K_STAGES) & 1) ^ 1)
        _issue_tile(kv_desc, k_ready.index(ks), k_smem.index(ks), bt_row, j, last_page, 0, PAGES, ROWS, PAGE,
                    BLOCK_N, col)
        vs = j % V_STAGES
        mbarrier.wait(v_empty.index(vs), ((j // V_STAGES) & 1) ^ 1)
        _issue_tile(kv_desc, v_ready.index(vs), v_smem.index(vs), bt_row, j, last_page, 1, PAGES, ROWS, PAGE,
                    BLOCK_N, col)


@gluon.jit
def _consumer(q_smem, k_smem, v_smem, q_bar, k_ready, k_empty, v_ready, v_empty, turns, out_ptr, qk_scale,
              q_start, q_len, ctx, prefix, first_row, head, n_tiles, full_end, stride_ot, stride_oh,
              HEAD_DIM: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, num_warps: gl.constexpr,
              WG: gl.constexpr, TURNS: gl.constexpr):
    """Scores, online softmax and P·V of BLOCK_M query rows over the tiles the producer
    delivers, releasing each K buffer once its scores are in and each V buffer once
    its P·V is. One warpgroup of two (SPLIT, paged_prefill's: WG 0 or 1, 64 rows
    each), or both warpgroups in one partition (SPLIT off); with TURNS the two take turns issuing their
    matrix multiplies (FA3's ping-pong: one's softmax under the other's GEMMs)."""
    dtype: gl.constexpr = q_smem.dtype
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    orow_layout: gl.constexpr = gl.SliceLayout(1, o_layout)
    io_layout: gl.constexpr = gl.BlockedLayout([1, 8], [4, 8], [num_warps, 1], [1, 0])
    rows = first_row + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, s_layout))
    cols = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
    zeros_s = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, s_layout)

    # Tile 0: scores and softmax only (its P·V goes out with tile 1's scores).
    mbarrier.wait(q_bar, 0)
    mbarrier.wait(k_ready.index(0), 0)
    if TURNS:
        if WG == 1:
            mbarrier.wait(turns.index(1), 0)          # warpgroup 0 goes first
    s = warpgroup_mma(q_smem, k_smem.index(0).permute((1, 0)), zeros_s, use_acc=False, is_async=True)
    if TURNS:
        mbarrier.arrive(turns.index(1 - WG))
    s = warpgroup_mma_wait(0, deps=[s])
    mbarrier.arrive(k_empty.index(0))
    if full_end <= 0:
        visible = (cols[None, :] <= prefix + rows[:, None]) & (cols[None, :] < ctx)
        s = gl.where(visible, s, float("-inf"))
    m_i = gl.max(s, axis=1) * qk_scale                         # every row sees key 0: finite
    p = gl.exp2(s * qk_scale - m_i[:, None])
    l_i = gl.sum(p, axis=1)
    p_prev = gl.convert_layout(p.to(dtype), p_layout)
    acc = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, o_layout)

    for j in range(1, n_tiles):
        ks = j % K_STAGES
        vs = (j - 1) % V_STAGES
        mbarrier.wait(k_ready.index(ks), (j // K_STAGES) & 1)
        if TURNS:
            # This warpgroup's turn: the other has issued its multiplies of the tile before
            # (warpgroup 1) or of this one (warpgroup 0); at most one arrival is ever pending.
            mbarrier.wait(v_ready.index(vs), ((j - 1) // V_STAGES) & 1)
            mbarrier.wait(turns.index(WG), (j - 1 + WG) & 1)
        s = warpgroup_mma(q_smem, k_smem.index(ks).permute((1, 0)), zeros_s, use_acc=False, is_async=True)
        if not TURNS:
            mbarrier.wait(v_ready.index(vs), ((j - 1) // V_STAGES) & 1)
        acc = warpgroup_mma(p_prev, v_smem.index(vs), acc, is_async=True)
        if TURNS:
            mbarrier.arrive(turns.index(1 - WG))
        s = warpgroup_mma_wait(1, deps=[s])
        mbarrier.arrive(k_empty.index(ks))
        # Softmax of tile j while P_{j-1} V_{j-1} runs.
        if j >= full_end:
            visible = (j * BLOCK_N + cols[None, :] <= prefix + rows[:, None]) & (j * BLOCK_N + cols[None, :] < ctx)
            s = gl.where(visible, s, float("-inf"))
        m_new = gl.maximum(m_i, gl.max(s, axis=1) * qk_scale)
        alpha = gl.exp2(m_i - m_new)
        p = gl.exp2(s * qk_scale - m_new[:, None])
        l_i = l_i * alpha + gl.sum(p, axis=1)
        m_i = m_new
        acc, p_prev = warpgroup_mma_wait(0, deps=[acc, p_prev])
        mbarrier.arrive(v_empty.index(vs))
        acc = acc * gl.convert_layout(alpha, orow_layout)[:, None]
        p_prev = gl.convert_layout(p.to(dtype), p_layout)

    last = n_tiles - 1
    vs = last % V_STAGES
    mbarrier.wait(v_ready.index(vs), (last // V_STAGES) & 1)
    v_last = v_smem.index(vs)
    if (last + 1) * BLOCK_N > ctx:
        # Slots past the context were never written: zero their V rows (P is 0 there,
        # but 0 * NaN is not).
        v = v_last.load(io_layout)
        vrow = last * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, io_layout))
        v_last.store(gl.where((vrow < ctx)[:, None], v, gl.zeros_like(v)))
        fence_async_shared()
        _cta_barrier()
    acc = warpgroup_mma(p_prev, v_last, acc, is_async=True)
    acc = warpgroup_mma_wait(0, deps=[acc])

    o = acc / gl.convert_layout(l_i, orow_layout)[:, None]
    o = gl.convert_layout(o.to(out_ptr.dtype.element_ty), io_layout)
    orow = first_row + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, io_layout))
    ocol = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, io_layout))
    optr = out_ptr + (q_start + orow).to(gl.int64)[:, None] * stride_ot + head * stride_oh + ocol[None, :]
    gl.store(optr, o, mask=(orow < q_len)[:, None])


@gluon.jit
def prefill_sm90_kernel(q_desc, kv_desc, out_ptr, bt_ptr, qsl_ptr, ctx_ptr, tile_map_ptr,
                         qk_scale, max_tiles, stride_ot, stride_oh, stride_bt,
                         GROUP: gl.constexpr, HEAD_DIM: gl.constexpr, PAGE: gl.constexpr, ROWS: gl.constexpr,
                         BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, SPLIT: gl.constexpr,
                         TURNS: gl.constexpr, num_warps: gl.constexpr):
    # 1-D grid, ordered as the Triton kernel's (KV head, tile map, query head in the group).
    pid = gl.program_id(0)
    rest = pid // GROUP
    head = (rest // max_tiles) * GROUP + pid % GROUP
    tile_id = rest % max_tiles
    seq = gl.load(tile_map_ptr + tile_id)
    if seq < 0:
        return
    m_block = gl.load(tile_map_ptr + max_tiles + tile_id)
    q_start = gl.load(qsl_ptr + seq)
    q_len = gl.load(qsl_ptr + seq + 1) - q_start
    ctx = gl.load(ctx_ptr + seq)
    prefix = ctx - q_len
    first_row = m_block * BLOCK_M
    bt_row = bt_ptr + seq.to(gl.int64) * stride_bt
    kv_end = gl.minimum(prefix + first_row + BLOCK_M, ctx)
    n_tiles = gl.cdiv(kv_end, BLOCK_N)
    full_end = (prefix + first_row + 1) // BLOCK_N              # tiles before it need no mask

    dtype: gl.constexpr = q_desc.dtype
    q_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, HEAD_DIM], q_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [K_STAGES, BLOCK_N, HEAD_DIM], kv_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [V_STAGES, BLOCK_N, HEAD_DIM], kv_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [K_STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [K_STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [V_STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [V_STAGES, 1], mbarrier.MBarrierLayout())
    turns = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    CONSUMERS: gl.constexpr = 1 + SPLIT          # arrivals that release a buffer
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(K_STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(k_empty.index(i), count=CONSUMERS)
    for i in gl.static_range(V_STAGES):
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(v_empty.index(i), count=CONSUMERS)
    if SPLIT:
        for i in gl.static_range(2):
            mbarrier.init(turns.index(i), count=1)
    mbarrier.expect(q_bar, q_desc.block_type.nbytes)
    _tma_load(q_desc, [q_start + first_row, head * HEAD_DIM], q_bar, q_smem)

    last_page = (ctx - 1) // PAGE
    col = (head // GROUP) * HEAD_DIM
    if SPLIT:
        # paged_prefill's schedule: one partition per warpgroup, 64 query rows each, so
        # each waits and releases buffers on its own (with TURNS they alternate multiplies).
        HALF: gl.constexpr = BLOCK_M // 2
        gl.warp_specialize(
            [(_consumer, (q_smem.slice(0, HALF), k_smem, v_smem, q_bar, k_ready, k_empty, v_ready, v_empty, turns,
                          out_ptr, qk_scale, q_start, q_len, ctx, prefix, first_row, head, n_tiles, full_end,
                          stride_ot, stride_oh, HEAD_DIM, HALF, BLOCK_N, num_warps, 0, TURNS)),
             (_consumer, (q_smem.slice(HALF, HALF), k_smem, v_smem, q_bar, k_ready, k_empty, v_ready, v_empty,
                          turns, out_ptr, qk_scale, q_start, q_len, ctx, prefix, first_row + HALF, head, n_tiles,
                          full_end, stride_ot, stride_oh, HEAD_DIM, HALF, BLOCK_N, num_warps, 1, TURNS)),
             (_producer, (kv_desc, k_smem, v_smem, k_ready, k_empty, v_ready, v_empty, bt_row, last_page, n_tiles, col,
                          BLOCK_N // ROWS, ROWS, PAGE, BLOCK_N))],
            [num_warps, PRODUCER_WARPS], [SPLIT_CONSUMER_REGS, PRODUCER_REGS])
    else:
        gl.warp_specialize(
            [(_consumer, (q_smem, k_smem, v_smem, q_bar, k_ready, k_empty, v_ready, v_empty, turns, out_ptr,
                          qk_scale, q_start, q_len, ctx, prefix, first_row, head, n_tiles, full_end, stride_ot,
                          stride_oh, HEAD_DIM, BLOCK_M, BLOCK_N, num_warps, 0, False)),
             (_producer, (kv_desc, k_smem, v_smem, k_ready, k_empty, v_ready, v_empty, bt_row, last_page, n_tiles, col,
                          BLOCK_N // ROWS, ROWS, PAGE, BLOCK_N))],
            [PRODUCER_WARPS], [PRODUCER_REGS])
