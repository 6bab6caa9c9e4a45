"""paged_decode's kernel route (kernels/decode_route.py): which kernel a call gets, what
`kernel=` refuses and how it says so, and, on an sm_89+ GPU, the register-only
quantised kernel reached through paged_decode (checked, unchecked on a workspace,
replayed, under a CUDA graph) against the float64 oracle and against the Triton
kernel. The rest of the decode conformance runs through the route as well: its
fp8/int8 head_dim-128 cases take the register-only kernel on such a GPU."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from conformance.kernel_support import (assert_close, assert_guard_intact, oracle_decode, poisoned_like, size_plan,
                                        tolerance)
from conformance.paged_cases import make_paged_kv, rel_error
from kernels import decode_route, paged_decode
from kernels.decode_workspace import DecodeWorkspace
from kernels.triton_compat import is_interpreting

DEVICE = size_plan().device        # the interpreter's CPU in CI, the GPU where there is one
interpreter_only = pytest.mark.skipif(not is_interpreting(), reason="the interpreter's route (CPU runs)")


def _case(lens=(5, 40), heads=(8, 2), head_dim=128, page=16, cache_dtype=torch.float8_e4m3fn,
          query_dtype=torch.bfloat16, device=DEVICE, seed=3):
    gen = torch.Generator().manual_seed(seed)
    kv = make_paged_kv(gen, list(lens), heads[1], head_dim, page, cache_dtype, device)
    q = torch.randn((len(lens), heads[0], head_dim), generator=gen).to(device, query_dtype)
    return q, kv


def _decode(q, kv, **kw):
    return paged_decode(q, kv.kv_cache, kv.block_tables, kv.context_lens, q.shape[-1] ** -0.5, kv.kv_scales, **kw)


def test_unknown_kernel_is_refused() -> None:
    q, kv = _case()
    with pytest.raises(ValueError, match=r"kernel must be one of \('auto', 'triton', 'quant_mma'\)"):
        _decode(q, kv, kernel="mma")


@pytest.mark.parametrize("change,kw,message", [
    pytest.param({}, {}, "the Triton interpreter runs Triton kernels only", marks=interpreter_only),
    (dict(cache_dtype=torch.bfloat16), {}, "it decodes fp8/int8 caches"),
    ({}, dict(block_n=16), "block_n tune the Triton kernel"),
    ({}, dict(num_warps=2, split_reduce="fused"), r"num_warps, split_reduce='fused' tune the Triton kernel"),
])
def test_quant_mma_refusals_name_the_problem(change: dict, kw: dict, message: str) -> None:
    """kernel='quant_mma' where it cannot run is a ValueError with the reason, never
    the Triton kernel in its place (under the interpreter that is the first reason)."""
    q, kv = _case(**change)
    with pytest.raises(ValueError, match=f"kernel='quant_mma' cannot run this call: {message}"):
        _decode(q, kv, kernel="quant_mma", **kw)


class _Like:
    """What the route reads of a tensor, for devices this machine lacks."""

    def __init__(self, t: torch.Tensor, device: torch.device, ptr: int = 0) -> None:
        self.shape, self.dtype, self.device, self._t, self._ptr = t.shape, t.dtype, device, t, ptr

    def stride(self, *dim: int):
        return self._t.stride(*dim)

    def data_ptr(self) -> int:
        return self._ptr


@pytest.mark.parametrize("change,capability,ptr,message", [
    ({}, (8, 0), 0, "compute capability >= 8.9"),
    (dict(query_dtype=torch.float32), (9, 0), 0, "bfloat16/float16 queries"),
    (dict(head_dim=64), (9, 0), 0, "head_dim 128, not 64"),
    (dict(heads=(64, 2)), (9, 0), 0, "GQA group <= 16, not 32"),
    ({}, (9, 0), 4, "4-byte words from a 16-byte aligned base"),
    ({}, (9, 0), 0, None),
    ({}, (8, 9), 0, None),
    (dict(query_dtype=torch.float16, cache_dtype=torch.int8, heads=(16, 1), page=256), (12, 0), 0, None),
])
def test_refusal_reasons_on_a_gpu(monkeypatch, change: dict, capability: tuple, ptr: int, message: str) -> None:
    """The route's answer for a CUDA device of each capability, as the GPU sees it."""
    monkeypatch.setattr(decode_route, "capability", lambda index: capability)
    q, kv = _case(**change, device="cpu")
    cuda = torch.device("cuda", 0)
    why = decode_route.quant_mma_refusal(_Like(q, cuda), _Like(kv.kv_cache, cuda, ptr), (), False)
    if message is None:
        assert why is None
        assert decode_route.use_quant_mma("auto", _Like(q, cuda), _Like(kv.kv_cache, cuda), (), False)
        assert not decode_route.use_quant_mma("triton", _Like(q, cuda), _Like(kv.kv_cache, cuda), (), False)
    else:
        assert why is not None and message in why
        assert not decode_route.use_quant_mma("auto", _Like(q, cuda), _Like(kv.kv_cache, cuda, ptr), (), False)


@interpreter_only
def test_auto_on_the_interpreter_runs_the_triton_kernel() -> None:
    """fp8 under TRITON_INTERPRET=1 (CI): "auto" is the Triton kernel, and it is right."""
    q, kv = _case(lens=(3, 19))
    assert decode_route.quant_mma_refusal(q, kv.kv_cache, (), True) is not None
    assert_close(_decode(q, kv), oracle_decode(q, kv, 128 ** -0.5), tolerance(torch.bfloat16), "interpreter auto")


@pytest.mark.parametrize("programs,ctx,want", [
    (512, 4096, 2),       # B=64 x 8 KV heads: the probe's best (2), one wave of 1056 slots
    (512, 16384, 2),
    (64, 4096, 16),       # B=8: the probe's best (16)
    (2048, 1024, 1),      # more programs than slots: no split
    (8, 16384, 64),       # B=1: capped at MAX_SPLITS
    (8, 1000, 15),        # capped so each split keeps >= 64 tokens
    (64, 50, 1),          # too short to split
])
def test_quant_mma_splits_on_h200(programs: int, ctx: int, want: int) -> None:
    quant_mma = pytest.importorskip("kernels.decode_quant_mma_plan", reason="needs Triton's Gluon")
    assert quant_mma.quant_mma_splits(programs, ctx, sms=132) == want


def _sm89() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9)


needs_sm89 = pytest.mark.skipif(not _sm89(), reason="needs an sm_89+ GPU (the paired e4m3 convert)")


@pytest.mark.gpu
@needs_sm89
@pytest.mark.parametrize("cache_dtype", [torch.float8_e4m3fn, torch.int8], ids=["fp8", "int8"])
@pytest.mark.parametrize("lens,heads,page,query_dtype,splits", [
    ([0, 1, 37, 0, 300, 1000], (8, 2), 16, torch.bfloat16, None),       # zero contexts give zero rows
    ([17, 4096, 2049], (32, 8), 16, torch.bfloat16, None),
    ([5, 129, 700], (8, 8), 8, torch.float16, None),
    ([257, 1500], (32, 2), 256, torch.bfloat16, 3),
    ([2, 40, 1], (16, 1), 32, torch.float16, 9),
])
def test_route_matches_oracle_and_triton(cache_dtype, lens, heads, page, query_dtype, splits) -> None:
    q, kv = _case(lens, heads, 128, page, cache_dtype, query_dtype, "cuda", seed=sum(lens) + page)
    assert decode_route.use_quant_mma("auto", q, kv.kv_cache, (), False)
    ref = oracle_decode(q, kv, 128 ** -0.5)
    what = f"{cache_dtype} {lens} {heads} page {page} {query_dtype} splits {splits}"
    outs = {}
    for kernel in ("auto", "quant_mma", "triton"):
        out = poisoned_like(q)
        assert _decode(q, kv, out=out, num_splits=splits, kernel=kernel).data_ptr() == out.data_ptr()
        assert_guard_intact(out, f"{kernel} {what}")
        assert_close(out, ref, tolerance(query_dtype), f"{kernel} {what}")
        outs[kernel] = out
    assert torch.equal(outs["auto"], outs["quant_mma"]), "auto did not take the register-only kernel"
    for i, n in enumerate(lens):
        if n == 0:
            assert torch.count_nonzero(outs["auto"][i]) == 0, f"row {i} (context 0) is not zero"
    assert rel_error(outs["auto"], outs["triton"]) <= tolerance(query_dtype).rel


@pytest.mark.gpu
@needs_sm89
@pytest.mark.parametrize("cache_dtype", [torch.float8_e4m3fn, torch.int8], ids=["fp8", "int8"])
@pytest.mark.parametrize("splits", [None, 2], ids=["reduce-kernel", "fused-merge"])
def test_route_replays_on_a_workspace_and_in_a_graph(cache_dtype, splits) -> None:
    """Unchecked calls on a workspace plan once and replay (new tensors of the same
    metadata each layer), and the replay captured in a CUDA graph gives the checked result:
    with the split rule's 33 splits (the separate reduce) and with 2 (merged in-kernel)."""
    q, kv = _case([100, 3000, 1, 777], (32, 8), 128, 16, cache_dtype, torch.bfloat16, "cuda", seed=9)
    checked = _decode(q, kv, num_splits=splits)
    ws = DecodeWorkspace()
    out = torch.empty_like(q)
    kw = dict(out=out, workspace=ws, check_indices=False, max_context_len=3000, num_splits=splits)
    for layer in range(3):
        q_layer = q.clone()                       # a new tensor of the same metadata, as each layer passes
        _decode(q_layer, kv, **kw)
        assert len(ws.plans) == 1
        assert torch.equal(out, checked), f"layer {layer}: the replay differs from the checked call"
    out.zero_()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        _decode(q, kv, **kw)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, checked), "the graph replay differs from the checked call"
