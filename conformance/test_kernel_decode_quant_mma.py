"""The register-only quantised decode (kernels/decode_quant_mma.py, which paged_decode
routes fp8/int8 caches to): on any machine, what it refuses and how it says so; on an
sm_89+ GPU, its result against the float64 oracle on the dequantised cache (fp8 and
int8, GQA groups 1-16, pages 16-256, every (tile, prefetch depth) schedule, more splits
than short contexts fill, unwritten cache slots NaN, merged in-kernel or by the reduce
kernel) by the decode conformance's own bounds, and the in-kernel merge's tickets."""
from __future__ import annotations

import pytest
import torch

from conformance.kernel_support import assert_close, oracle_decode, tolerance
from conformance.paged_cases import make_paged_kv

quant_mma = pytest.importorskip("kernels.decode_quant_mma_plan", reason="needs Triton's Gluon")


def _inputs(cache_dtype=torch.float8_e4m3fn, heads=(8, 2), head_dim=128, device="cpu"):
    gen = torch.Generator().manual_seed(7)
    kv = make_paged_kv(gen, [5, 40], heads[1], head_dim, 16, cache_dtype, device)
    q = torch.randn((2, heads[0], head_dim), generator=gen).to(device, torch.bfloat16)
    return q, kv


@pytest.mark.parametrize("change,message", [
    (dict(cache_dtype=torch.bfloat16), "an e4m3 or int8 cache"),
    (dict(head_dim=64), "head_dim 128"),
    (dict(heads=(64, 2)), "GQA group <= 16"),
    (dict(num_splits=0), "num_splits must be >= 1"),
    (dict(tile=8), r"\(tile, depth\) one of"),
    (dict(tile=32, depth=2), r"\(tile, depth\) one of"),
])
def test_refusals_name_the_problem(change: dict, message: str) -> None:
    call = {k: change.pop(k) for k in ("num_splits", "tile", "depth") if k in change}
    q, kv = _inputs(**change)
    if change.get("cache_dtype") == torch.bfloat16:
        kv.kv_scales = torch.ones(kv.kv_cache.shape[:4])
    with pytest.raises(ValueError, match=message):
        quant_mma.decode_quant_mma(q, kv.kv_cache, kv.kv_scales, kv.block_tables, kv.context_lens, 0.1, 40,
                                   call.get("num_splits", 2), tile=call.get("tile", 32), depth=call.get("depth", 1))


def test_refuses_a_cache_not_in_whole_words() -> None:
    q, kv = _inputs()
    odd = torch.zeros(kv.kv_cache.numel() + 1, dtype=torch.uint8)[1:].view(torch.float8_e4m3fn)
    cache = odd.view(kv.kv_cache.shape)
    with pytest.raises(ValueError, match="4-byte words"):
        quant_mma.decode_quant_mma(q, cache, kv.kv_scales, kv.block_tables, kv.context_lens, 0.1, 40, 1)


@pytest.mark.parametrize("splits", [1, 4, 5, 16])
@pytest.mark.parametrize("pdl", [False, True])
def test_who_merges_the_splits(monkeypatch, splits: int, pdl: bool) -> None:
    """Up to FUSED_MAX_SPLITS splits and without pdl the kernel merges in-kernel (one
    launch, a ticket per sequence and KV head); past it, or with pdl=True, the Triton
    reduce does (launches recorded, any machine); in-kernel with pdl is refused."""
    launches = []
    monkeypatch.setattr(quant_mma, "prepare", lambda *a: launches.append(("attend", a)) or "attend")
    monkeypatch.setattr(quant_mma, "prepare_reduce", lambda *a: launches.append(("reduce", a)) or "reduce")
    q, kv = _inputs()
    out = torch.empty_like(q)
    args = (q, kv.kv_cache, kv.kv_scales, kv.block_tables, kv.context_lens, 0.1, out, 40, splits, 1, None, pdl)
    plan = quant_mma.plan_quant_mma(*args)
    fused = splits <= quant_mma.FUSED_MAX_SPLITS and not pdl
    assert [name for name, _ in launches] == ["attend"] + ([] if fused else ["reduce"])
    _, (kernel, grid, ptrs, scalars, consts, options) = launches[0]
    assert consts[-1] is fused and grid == (2, 2, splits)
    assert (plan.reduce is None, plan.tickets is not None) == (fused, fused)
    assert ptrs[5] is out and ptrs[-1] is (plan.tickets if fused else out)
    if fused:
        assert plan.tickets.shape == (2 * 2,) and torch.count_nonzero(plan.tickets) == 0
    if pdl:
        with pytest.raises(ValueError, match="pdl=True launches the separate split-K reduce"):
            quant_mma.plan_quant_mma(*args, fused=True)


def _sm89() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9)


@pytest.mark.gpu
@pytest.mark.skipif(not _sm89(), reason="needs an sm_89+ GPU (the paired e4m3 convert)")
@pytest.mark.parametrize("cache_dtype", [torch.float8_e4m3fn, torch.int8], ids=["fp8", "int8"])
@pytest.mark.parametrize("lens,heads,page,splits,tile,depth", [
    ([1, 37, 300, 1000], (8, 2), 16, 1, 32, 1),
    ([1, 37, 300, 1000], (8, 2), 16, 3, 16, 1),
    ([33, 64, 65, 511], (32, 4), 32, 2, 32, 1),
    ([5, 129, 700], (8, 8), 16, 4, 16, 2),
    ([257, 1500], (32, 2), 256, 2, 16, 2),
    ([2, 40], (8, 2), 16, 8, 32, 1),
])
@pytest.mark.parametrize("fused", [False, True], ids=["reduce-kernel", "fused-merge"])
def test_matches_oracle(cache_dtype, lens, heads, page, splits, tile, depth, fused) -> None:
    gen = torch.Generator().manual_seed(sum(lens) + page)
    kv = make_paged_kv(gen, lens, heads[1], 128, page, cache_dtype, "cuda")
    q = torch.randn((len(lens), heads[0], 128), generator=gen).to("cuda", torch.bfloat16)
    scale = 128 ** -0.5
    out = quant_mma.decode_quant_mma(q, kv.kv_cache, kv.kv_scales, kv.block_tables, kv.context_lens, scale,
                                     max(lens), splits, tile=tile, depth=depth, fused=fused)
    assert_close(out, oracle_decode(q, kv, scale), tolerance(torch.bfloat16),
                 f"{cache_dtype} {lens} {heads} page {page} splits {splits} tile {tile} depth {depth} fused {fused}")


@pytest.mark.gpu
@pytest.mark.skipif(not _sm89(), reason="needs an sm_89+ GPU (the paired e4m3 convert)")
@pytest.mark.parametrize("splits", [1, 3, 8])
def test_fused_merge_repeats_bitwise_and_resets_its_tickets(splits: int) -> None:
    """The in-kernel merge over one ticket buffer, call after call: every call the same
    bits (a ticket left non-zero would skip or double a merge), zero rows for empty
    contexts, and the separate reduce's result within rounding (same partials, another
    summation order)."""
    from kernels.decode_workspace import DecodeWorkspace
    gen = torch.Generator().manual_seed(splits)
    lens = [0, 1, 37, 0, 3000, 64, 700]
    kv = make_paged_kv(gen, lens, 8, 128, 16, torch.float8_e4m3fn, "cuda")
    q = torch.randn((len(lens), 32, 128), generator=gen).to("cuda", torch.bfloat16)
    scale = 128 ** -0.5
    ws = DecodeWorkspace()
    args = (kv.kv_cache, kv.kv_scales, kv.block_tables, kv.context_lens, scale)
    plan = quant_mma.plan_quant_mma(q, *args, torch.empty_like(q), max(lens), splits, 1, ws, False, fused=True)
    assert plan.reduce is None and plan.tickets is not None
    outs = [plan.run(q, kv.kv_cache, kv.kv_scales, kv.block_tables, kv.context_lens, torch.full_like(q, float("nan")))
            for _ in range(4)]
    for i, out in enumerate(outs[1:], 1):
        assert torch.equal(out, outs[0]), f"call {i} differs from call 0"
    assert torch.count_nonzero(plan.tickets) == 0, "a ticket was left set"
    for i, n in enumerate(lens):
        if n == 0:
            assert torch.count_nonzero(outs[0][i]) == 0, f"row {i} (context 0) is not zero"
    apart = quant_mma.decode_quant_mma(q, kv.kv_cache, kv.kv_scales, kv.block_tables, kv.context_lens, scale,
                                       max(lens), splits, fused=False)
    assert (outs[0].float() - apart.float()).abs().max().item() <= 2 ** -7 * apart.float().abs().max().item()
    assert_close(outs[0], oracle_decode(q, kv, scale), tolerance(torch.bfloat16), f"fused splits {splits}")
