"""The register-only quantised decode (kernels/decode_quant_mma.py, not yet routed by
paged_decode): on any machine, what it refuses and how it says so; on an sm_89+ GPU,
its result against the float64 oracle on the dequantised cache (fp8 and int8, GQA
groups 1-16, pages 16-256, every (tile, prefetch depth) schedule, more splits than short
contexts fill, unwritten cache slots NaN) by the decode conformance's own bounds."""
from __future__ import annotations

import pytest
import torch

from conformance.kernel_support import assert_close, oracle_decode, tolerance
from conformance.paged_cases import make_paged_kv

quant_mma = pytest.importorskip("kernels.decode_quant_mma", reason="needs Triton's Gluon")


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
def test_matches_oracle(cache_dtype, lens, heads, page, splits, tile, depth) -> None:
    gen = torch.Generator().manual_seed(sum(lens) + page)
    kv = make_paged_kv(gen, lens, heads[1], 128, page, cache_dtype, "cuda")
    q = torch.randn((len(lens), heads[0], 128), generator=gen).to("cuda", torch.bfloat16)
    scale = 128 ** -0.5
    out = quant_mma.decode_quant_mma(q, kv.kv_cache, kv.kv_scales, kv.block_tables, kv.context_lens, scale,
                                     max(lens), splits, tile=tile, depth=depth)
    assert_close(out, oracle_decode(q, kv, scale), tolerance(torch.bfloat16),
                 f"{cache_dtype} {lens} {heads} page {page} splits {splits} tile {tile} depth {depth}")
