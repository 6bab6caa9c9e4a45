"""paged_prefill's choice of kernel (kernels/prefill_route.py) and the sm_90 Gluon kernel.

On every machine: which calls the sm_90 kernel refuses and why (each reason on
its own, through stand-in tensors whose strides and pointers are set at will),
how the tuning knobs pick a kernel, and that asking for kernel='sm90' where it
cannot run is a ValueError with the reason. On an sm_90 device: the Gluon
kernel, forced, against the float64 oracle (both query dtypes, head_dim 64 and
128, pages 16-128, caches whose unwritten slots are NaN), bitwise against
itself through a plan's replay, "auto" choosing it, and the schedules paged_prefill
does not run (one consumer partition; SPLIT with TURNS) against the oracle too.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from conformance.test_kernel_paged_prefill import (assert_close, build_case, fixed_batch, run_kernel, run_oracle,
                                                   sizes)
from kernels.paged_prefill import paged_prefill
from kernels.prefill_config import prefill_config
from kernels.prefill_plan import plan_prefill
from kernels.prefill_route import sm90_refusal, use_sm90


class _Stand:
    """What sm90_refusal reads of a tensor, set at will (a CUDA one on a CPU machine)."""

    def __init__(self, shape, dtype=torch.bfloat16, strides=None, ptr=0, device="cuda:0"):
        self.shape, self.dtype, self.device, self._ptr = tuple(shape), dtype, torch.device(device), ptr
        self._strides = strides or tuple(int(torch.tensor(shape[i + 1:]).prod()) for i in range(len(shape)))

    def stride(self, dim=None):
        return self._strides if dim is None else self._strides[dim]

    def data_ptr(self):
        return self._ptr

    def element_size(self):
        return torch.empty(0, dtype=self.dtype).element_size()


def _refusal(monkeypatch, cap=(9, 0), query=None, cache=None, quantized=False, block_m=128, interpreting=False):
    import kernels.prefill_route as route
    monkeypatch.setattr(route, "_capability", lambda index: cap)
    query = query or _Stand((300, 32, 128))
    cache = cache or _Stand((64, 2, 16, 8, 128))
    return sm90_refusal(query, cache, quantized, block_m, interpreting)


def test_sm90_accepts_the_benchmark_shapes(monkeypatch) -> None:
    assert _refusal(monkeypatch) is None
    assert _refusal(monkeypatch, query=_Stand((7, 16, 64), torch.float16),
                    cache=_Stand((9, 2, 256, 4, 64), torch.float16)) is None
    # A per-layer view of one engine-wide cache: slot rows strided, heads a slice of the row.
    engine = (8 * 2 * 32 * 16 * 128 * 4, 2 * 32 * 16 * 128, 32 * 16 * 128, 16 * 128, 128, 1)
    assert _refusal(monkeypatch, cache=_Stand((64, 2, 32, 8, 128), strides=engine[1:])) is None


@pytest.mark.parametrize("change,reason", [
    (dict(interpreting=True), "interpreter"),
    (dict(cap=(8, 0)), "compute capability 9.0"),
    (dict(cap=(10, 0)), "compute capability 9.0"),
    (dict(quantized=True), "quantised"),
    (dict(query=_Stand((300, 32, 128), torch.float32), cache=_Stand((64, 2, 16, 8, 128), torch.float32)),
     "bfloat16/float16"),
    (dict(query=_Stand((300, 32, 96)), cache=_Stand((64, 2, 16, 8, 96))), "head_dim"),
    (dict(cache=_Stand((64, 2, 8, 8, 128))), "block size >= 16"),
    (dict(block_m=64), "block_m is 64"),
    (dict(query=_Stand((300, 32, 128), strides=(8192, 256, 1))), "heads contiguous"),
    (dict(cache=_Stand((64, 2, 16, 8, 128), strides=(2 * 16 * 2048 + 16, 16 * 2048, 2048, 128, 1))),
     "uniformly strided"),
    (dict(query=_Stand((300, 32, 128), ptr=8)), "16-byte aligned"),
    (dict(cache=_Stand((2**26, 2, 16, 8, 128))), "int32"),
])
def test_sm90_refusals_name_the_reason(monkeypatch, change: dict, reason: str) -> None:
    got = _refusal(monkeypatch, **change)
    assert got is not None and reason in got, got


def test_sm90_refuses_cpu_tensors() -> None:
    q, c = torch.zeros(4, 2, 64, dtype=torch.bfloat16), torch.zeros(2, 2, 16, 1, 64, dtype=torch.bfloat16)
    assert "CUDA device" in sm90_refusal(q, c, False, 128, interpreting=False)


def test_forced_sm90_where_it_cannot_run_is_an_error(monkeypatch) -> None:
    import kernels.prefill_route as route
    monkeypatch.setattr(route, "_capability", lambda index: (8, 0))
    q, c = _Stand((300, 32, 128)), _Stand((64, 2, 16, 8, 128))
    with pytest.raises(ValueError, match="kernel='sm90' cannot run this call: it needs compute capability 9.0"):
        use_sm90("sm90", q, c, False, 128, False)
    assert use_sm90("auto", q, c, False, 128, False) is False
    monkeypatch.setattr(route, "_capability", lambda index: (9, 0))
    assert use_sm90("auto", q, c, False, 128, False) is True
    assert use_sm90("triton", q, c, False, 128, False) is False


def test_tile_knobs_pick_the_triton_kernel() -> None:
    assert prefill_config(128, torch.bfloat16, True).kernel == "auto"
    assert prefill_config(128, torch.bfloat16, True, block_m=128).kernel == "auto"   # the sm_90 tile too
    for knob in ("block_n", "num_warps", "num_stages"):
        assert prefill_config(128, torch.bfloat16, True, **{knob: 64 if knob == "block_n" else 4}).kernel == "triton"
        with pytest.raises(ValueError, match=f"{knob} tune the Triton kernel; kernel='sm90' takes none"):
            prefill_config(128, torch.bfloat16, True, kernel="sm90", **{knob: 64 if knob == "block_n" else 4})
    with pytest.raises(ValueError, match="kernel must be one of"):
        prefill_config(128, torch.bfloat16, True, kernel="gluon")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter's refusal: a CPU run")
def test_forced_sm90_under_the_interpreter_raises() -> None:
    case = build_case(5, fixed_batch(64, 16, (4, 2), torch.bfloat16, "auto", 15))
    kv = case.kv
    with pytest.raises(ValueError, match="kernel='sm90' cannot run this call: the Triton interpreter"):
        paged_prefill(case.query, kv.kv_cache, kv.block_tables, case.query_start_loc, kv.context_lens, case.scale,
                      kernel="sm90")
    # The same call on the Triton kernel, named, gives the default's result.
    named = paged_prefill(case.query, kv.kv_cache, kv.block_tables, case.query_start_loc, kv.context_lens,
                          case.scale, kernel="triton", **{k: v for k, v in case.tuning.items() if v})
    default = paged_prefill(case.query, kv.kv_cache, kv.block_tables, case.query_start_loc, kv.context_lens,
                            case.scale, **{k: v for k, v in case.tuning.items() if v})
    assert torch.equal(named, default)


def _on_sm90() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)


sm90 = pytest.mark.skipif(not _on_sm90(), reason="needs an sm_90 (Hopper) device")


@pytest.mark.gpu
@sm90
@pytest.mark.parametrize("head_dim,block_size", [(64, 16), (128, 16), (128, 32), (64, 128), (128, 128)])
@pytest.mark.parametrize("query_dtype", [torch.bfloat16, torch.float16], ids=str)
def test_sm90_matches_oracle(head_dim: int, block_size: int, query_dtype: torch.dtype) -> None:
    """Forced sm_90 kernel: decode rows, multi-tile extends over cached prefixes that
    end mid-tile, a fresh prompt; the cache's unused slots are NaN (make_paged_kv)."""
    p = fixed_batch(head_dim, block_size, (32, 8), query_dtype, "auto", sizes().max_prefix + 5)
    case = build_case(head_dim + block_size, p)
    case.tuning = {"kernel": "sm90"}
    assert_close(run_kernel(case), run_oracle(case), query_dtype)


@pytest.mark.gpu
@sm90
def test_sm90_is_auto_and_replays_bitwise() -> None:
    from kernels.prefill_sm90_launch import Sm90Launch
    p = fixed_batch(128, 16, (32, 8), torch.bfloat16, "auto", 1000)
    case = build_case(11, p)
    kv = case.kv
    num_blocks, _, block_size, _, head_dim = kv.kv_cache.shape
    plan = plan_prefill(case.query_start_loc, kv.context_lens, kv.block_tables, case.query.shape[0], num_blocks,
                        block_size, head_dim, case.query.dtype, True)
    args = (kv.kv_cache, kv.block_tables, case.query_start_loc, kv.context_lens, case.scale)
    first = paged_prefill(case.query, *args, plan=plan)
    assert [type(v) for v in plan.launches.values()] == [Sm90Launch]
    again = paged_prefill(case.query.clone(), *args, plan=plan)      # the replay, new tensors
    assert torch.equal(first, again)
    triton = paged_prefill(case.query, *args, kernel="triton")
    assert_close(first, run_oracle(case), torch.bfloat16)
    assert (first.float() - triton.float()).abs().max().item() < 0.05


@pytest.mark.gpu
@sm90
@pytest.mark.parametrize("split,turns", [(False, False), (True, True)], ids=["one-partition", "split-turns"])
@pytest.mark.parametrize("head_dim,block_size", [(64, 16), (128, 32)])
def test_sm90_other_schedules_match_oracle(split: bool, turns: bool, head_dim: int, block_size: int) -> None:
    """The schedules paged_prefill does not run (kept for bench/probe_prefill_sm90.py's
    --variants) still hold to the oracle, on the same NaN-poisoned batches."""
    from kernels.prefill_sm90_launch import Sm90Launch
    p = fixed_batch(head_dim, block_size, (32, 8), torch.bfloat16, "auto", sizes().max_prefix + 5)
    case = build_case(head_dim * 3 + block_size, p)
    kv = case.kv
    num_blocks, _, page, _, _ = kv.kv_cache.shape
    plan = plan_prefill(case.query_start_loc, kv.context_lens, kv.block_tables, case.query.shape[0], num_blocks,
                        page, head_dim, case.query.dtype, True, block_m=128, kernel="sm90")
    out = torch.full_like(case.query, float("nan"))
    launch = Sm90Launch(case.query, kv.kv_cache, kv.block_tables, out, case.scale, plan.tile_map.shape[1],
                        split=split, turns=turns)
    launch(case.query, kv.kv_cache, kv.block_tables, case.query_start_loc, kv.context_lens, out, plan.tile_map)
    assert_close(out, run_oracle(case), torch.bfloat16)


@pytest.mark.parametrize("page", [16, 256])
def test_sm90_launch_geometry(monkeypatch, page: int) -> None:
    """What Sm90Launch hands the kernel, with the kernel replaced by a recorder (any
    machine): the grid, scalars and constexprs, and TMA descriptors whose 2-D views
    address the cache exactly as the kernel's row formula does, (block * 2 + kv) *
    page + slot, for a per-layer view of an engine-wide cache."""
    sm90 = pytest.importorskip("kernels.prefill_sm90_launch")
    from kernels.triton_compat import LOG2E
    calls = []

    class Recorder:
        def __getitem__(self, grid):
            return lambda *args, **kw: calls.append((grid, args, kw))   # returns None: no compiled handle

    monkeypatch.setattr(sm90, "prefill_sm90_kernel", Recorder())
    gen = torch.Generator().manual_seed(0)
    engine = torch.randn((3, 6, 2, page, 4, 64), generator=gen).to(torch.bfloat16)   # [layers, blocks, 2, page, Hkv, D]
    cache = engine[1]
    query = torch.randn((300, 16, 64), generator=gen).to(torch.bfloat16)
    out, tables = torch.empty_like(query), torch.zeros((2, 5), dtype=torch.int32)
    qsl, lens = torch.tensor([0, 100, 300], dtype=torch.int32), torch.tensor([100, 300], dtype=torch.int32)
    tile_map = torch.zeros((2, 3), dtype=torch.int32)
    launch = sm90.Sm90Launch(query, cache, tables, out, 0.125, 3)
    for _ in range(2):                                   # no compiled handle: each call is a JIT launch
        launch(query, cache, tables, qsl, lens, out, tile_map)
    assert len(calls) == 2
    grid, args, kw = calls[1]
    rows = min(page, sm90.BLOCK_N)
    assert grid == (3 * 16,)
    # paged_prefill's schedule: one 4-warp partition per consumer warpgroup (SPLIT).
    assert kw == dict(GROUP=4, HEAD_DIM=64, PAGE=page, ROWS=rows, BLOCK_M=128, BLOCK_N=128, SPLIT=True,
                      TURNS=False, num_warps=4)
    q_desc, kv_desc = args[:2]
    assert args[2:7] == (out, tables, qsl, lens, tile_map)
    assert args[7:] == (0.125 * LOG2E, 3, out.stride(0), out.stride(1), tables.stride(0))
    assert (list(q_desc.shape), list(q_desc.strides), list(q_desc.block_shape)) == ([300, 16 * 64], [16 * 64, 1],
                                                                                   [128, 64])
    assert (list(kv_desc.shape), list(kv_desc.block_shape)) == ([6 * 2 * page, 4 * 64], [rows, 64])
    assert kv_desc.base.data_ptr() == cache.data_ptr()
    view = cache.as_strided(tuple(kv_desc.shape), tuple(kv_desc.strides))
    for block, kv, slot, kv_head in [(0, 0, 0, 0), (5, 1, page - 1, 3), (2, 1, 7, 1), (4, 0, page // 2, 2)]:
        row = (block * 2 + kv) * page + slot
        assert torch.equal(view[row, kv_head * 64:(kv_head + 1) * 64], cache[block, kv, slot, kv_head])
    q_view = query.as_strided(tuple(q_desc.shape), tuple(q_desc.strides))
    assert torch.equal(q_view[123, 5 * 64:6 * 64], query[123, 5])

    # The compiled path (forced here: no GPU) hands the launcher LaunchDescriptors with every
    # field of the JIT path's TensorDescriptors, and the same other arguments.
    launched = []
    monkeypatch.setattr(sm90.launch, "jit_modes_off", lambda: True)
    monkeypatch.setattr(sm90.launch, "current_device", lambda: 0)
    monkeypatch.setattr(sm90, "compiled_sm90", lambda *key: "kernel")
    monkeypatch.setattr(sm90.launch, "run_compiled", lambda *a: launched.append(a))
    launch.device = 0
    launch(query, cache, tables, qsl, lens, out, tile_map)
    (kern, c_grid, device, c_args, c_scalars, c_consts), = launched
    assert (kern, c_grid, device, c_scalars) == ("kernel", (3 * 16, 1, 1), 0, args[7:])
    assert c_consts == tuple(kw.values())[:-1] + (4,) and c_args[2:] == args[2:7]
    for view, real in zip(c_args[:2], (q_desc, kv_desc)):
        assert type(view) is sm90.LaunchDescriptor
        assert view.base is real.base
        for field in dataclasses.fields(real)[1:]:
            assert getattr(view, field.name) == getattr(real, field.name), field.name


def test_descriptor_specialisation_ignores_shape_strides_and_base() -> None:
    """compiled_sm90 compiles with descriptors over small stand-in tensors. That is the
    call's own kernel only while Triton keys a descriptor on its dtype, block shape and
    layout alone: held here against Triton's own specialiser (any machine), over
    descriptors that differ in everything else a call can change."""
    gluon_hopper = pytest.importorskip("triton.experimental.gluon.nvidia.hopper")
    from triton._C.libtriton import native_specialize_impl
    from triton.backends.compiler import BaseBackend
    from triton.experimental.gluon import language as gl
    keys = set()
    for dtype, gdtype in ((torch.bfloat16, gl.bfloat16), (torch.float16, gl.float16)):
        layout = gl.NVMMASharedLayout.get_default_for([16, 128], gdtype)
        per_dtype = set()
        for rows, cols, offset in ((16, 128, 0), (4097, 1024, 0), (300, 2048, 8 * 128), (6 * 2 * 16, 512, 0)):
            flat = torch.empty(offset + rows * cols, dtype=dtype)
            desc = gluon_hopper.TensorDescriptor(flat[offset:].view(rows, cols), [rows, cols], [cols, 1], [16, 128],
                                                 layout)
            per_dtype.add(native_specialize_impl(BaseBackend, desc, False, True, True)[0])
        assert len(per_dtype) == 1, per_dtype
        keys |= per_dtype
    assert len(keys) == 2                       # the dtype is in the key


@pytest.mark.gpu
@sm90
def test_compiled_sm90_is_the_jit_kernel() -> None:
    """The kernel Sm90Launch runs from its first call (compiled_sm90, stand-in
    arguments) is the one the Gluon JIT compiles for the call's own arguments, and
    both launches give the same bits."""
    import kernels.prefill_sm90_launch as sm90
    p = fixed_batch(128, 16, (32, 8), torch.bfloat16, "auto", 600)
    case = build_case(7, p)
    kv = case.kv
    num_blocks, _, page, _, head_dim = kv.kv_cache.shape
    plan = plan_prefill(case.query_start_loc, kv.context_lens, kv.block_tables, case.query.shape[0], num_blocks,
                        page, head_dim, case.query.dtype, True, block_m=128, kernel="sm90")
    ours = torch.full_like(case.query, float("nan"))
    launch = sm90.Sm90Launch(case.query, kv.kv_cache, kv.block_tables, ours, case.scale,
                             plan.tile_map.shape[1])
    launch(case.query, kv.kv_cache, kv.block_tables, case.query_start_loc, kv.context_lens, ours, plan.tile_map)
    assert launch.kern is not None, "the compiled path did not run"
    jit_out = torch.full_like(case.query, float("nan"))
    group, dim, pg, rows, block_m, block_n, split, turns, num_warps = launch.consts
    descs = [sm90.TensorDescriptor(case.query, [case.query.shape[0], launch.q_cols], [case.query.stride(0), 1],
                                   list(launch.q_block), launch.q_layout),
             sm90.TensorDescriptor(kv.kv_cache, [launch.kv_rows, launch.kv_cols], [kv.kv_cache.stride(2), 1],
                                   list(launch.kv_block), launch.kv_layout)]
    handle = sm90.prefill_sm90_kernel[launch.grid[:1]](
        *descs, jit_out, kv.block_tables, case.query_start_loc, kv.context_lens, plan.tile_map, *launch.scalars,
        GROUP=group, HEAD_DIM=dim, PAGE=pg, ROWS=rows, BLOCK_M=block_m, BLOCK_N=block_n, SPLIT=split, TURNS=turns,
        num_warps=num_warps)
    assert handle.hash == launch.kern.handle.hash
    assert torch.equal(ours, jit_out)
    assert_close(ours, run_oracle(case), torch.bfloat16)
