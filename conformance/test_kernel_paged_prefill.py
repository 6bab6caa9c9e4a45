"""kernels.paged_prefill against the float64 oracle reference.attention.paged_prefill.

Tolerances (the kernel's error comes from rounding Q/K/V and P to the dot dtype
and the output to the query dtype; fp32 runs input_precision="ieee", so no
tf32 allowance; the fp32 bound leaves room for exp2.approx and 4k-term sums on GPU):

| query dtype | rel ‖out − ref‖/‖ref‖ | elementwise |out − ref| <= atol + rtol·|ref| |
|---|---|---|
| float32  | 2e-5 | 5e-5 + 2e-5·|ref| |
| float16  | 2e-3 | 4e-3 + 4e-3·|ref| |
| bfloat16 | 1.6e-2 | 3e-2 + 3e-2·|ref| |

Quantised caches (int8, fp8 e4m3) are held to the same table against the oracle
fed the dequantised cache (dequantisation is exact in the dot dtype), and against
the result on the unquantised cache built from the same draws with a looser
relative bound: int8 3e-2, fp8 1e-1 (per-element quantisation steps of amax/254
and 2^-4 relative).

The same tests run on CPU (Triton interpreter, small sizes) and on CUDA (full
sizes, a 32,768-block cache); `sizes()` makes that choice.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.paged_cases import PagedKV, make_paged_kv, rel_error
from kernels.paged_prefill import paged_prefill
from reference.attention import paged_prefill as oracle_prefill

TOLERANCES = {  # query dtype -> (rel, atol, rtol)
    torch.float32: (2e-5, 5e-5, 2e-5),
    torch.float16: (2e-3, 4e-3, 4e-3),
    torch.bfloat16: (1.6e-2, 3e-2, 3e-2),
}
QUANT_VS_FLOAT_REL = {torch.int8: 3e-2, torch.float8_e4m3fn: 1e-1}
HEAD_DIMS = (64, 80, 96, 128, 256)
BLOCK_SIZES = (8, 16, 32, 64)
QUERY_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
CACHE_KINDS = ("auto", torch.int8, torch.float8_e4m3fn)


@dataclass(frozen=True)
class Sizes:
    device: str
    heads: tuple[tuple[int, int], ...]   # (Hq, Hkv)
    max_seqs: int
    max_prefix: int
    block_ms: tuple[int | None, ...]     # BLOCK_M overrides to draw (None: the heuristic's)
    block_ns: tuple[int | None, ...]
    num_blocks: int | None               # None: just enough blocks; CUDA: 32,768
    cache_bytes_cap: int                 # fewer blocks when 32,768 would not fit this


def sizes() -> Sizes:
    """CPU: interpreter-sized shapes with small tiles so several query/KV tiles and
    the diagonal show up in tiny contexts. CUDA: the heuristic's tiles and real sizes."""
    if torch.cuda.is_available():
        # PAGEDLM_TEST_CACHE_CAP_GIB lowers the cap (ci/memcheck_conformance.py: memcheck's
        # own device memory comes on top); fewer blocks, the same shapes and draws.
        cap_gib = float(os.environ.get("PAGEDLM_TEST_CACHE_CAP_GIB", 12))
        return Sizes("cuda", ((1, 1), (9, 3), (8, 2), (16, 1), (32, 8), (32, 32)), 6, 3072,
                     (None, 64, 128), (None, 32, 64), 32768, int(cap_gib * (1 << 30)))
    return Sizes("cpu", ((1, 1), (2, 1), (4, 4), (9, 3), (8, 2), (16, 1)), 3, 80,
                 (16, 32), (16, 32), None, 1 << 30)


@dataclass
class Case:
    query: torch.Tensor
    query_start_loc: torch.Tensor
    kv: PagedKV
    scale: float
    tuning: dict


def _length(draw: st.DrawFn, edges: list[int], cap: int) -> int:
    choice = draw(st.sampled_from(edges + [-1]))
    return draw(st.integers(0, cap)) if choice < 0 else min(max(choice, 0), cap)


@st.composite
def prefill_cases(draw: st.DrawFn, cache_kind: object = None, query_dtype: torch.dtype | None = None,
                  ) -> tuple[int, dict]:
    """A seed and the shape parameters; tensors are built from the seed by `build_case`."""
    sz = sizes()
    hq, hkv = draw(st.sampled_from(sz.heads))
    block_m = draw(st.sampled_from(sz.block_ms))
    bm = block_m or 128
    bs = draw(st.sampled_from(BLOCK_SIZES))
    num_seqs = draw(st.integers(1, sz.max_seqs))
    max_query = 4 * bm if sz.device == "cuda" else 2 * bm + 3
    prefixes, qlens = [], []
    for _ in range(num_seqs):
        qlens.append(_length(draw, [0, 1, 1, bm - 1, bm, bm + 1, 2 * bm + 3], max_query))
        prefixes.append(_length(draw, [0, 0, bs - 1, bs, bs + 1, 2 * bs, sz.max_prefix], sz.max_prefix))
    if sum(qlens) == 0:
        qlens[0] = 1
    return draw(st.integers(0, 2**31 - 1)), dict(
        heads=(hq, hkv), head_dim=draw(st.sampled_from(HEAD_DIMS)), block_size=bs,
        query_dtype=query_dtype or draw(st.sampled_from(QUERY_DTYPES)),
        cache_kind=cache_kind or draw(st.sampled_from(CACHE_KINDS)),
        prefixes=prefixes, qlens=qlens, block_m=block_m, block_n=draw(st.sampled_from(sz.block_ns)))


def build_case(seed: int, p: dict, cache_kind: object = None, cache_bytes_cap: int | None = None) -> Case:
    """The tensors of a drawn case; on CUDA in a cache of up to 32,768 blocks, fewer
    when that would pass `cache_bytes_cap` (default: the size plan's)."""
    sz = sizes()
    cap = sz.cache_bytes_cap if cache_bytes_cap is None else cache_bytes_cap
    gen = torch.Generator().manual_seed(seed)
    hq, hkv = p["heads"]
    d, bs, qdtype = p["head_dim"], p["block_size"], p["query_dtype"]
    kind = cache_kind or p["cache_kind"]
    cache_dtype = qdtype if kind == "auto" else kind
    contexts = [a + b for a, b in zip(p["prefixes"], p["qlens"])]
    num_blocks = None
    if sz.num_blocks is not None:
        row_bytes = 2 * bs * hkv * d * torch.empty(0, dtype=cache_dtype).element_size()
        num_blocks = max(min(sz.num_blocks, cap // row_bytes),
                         sum(-(-c // bs) for c in contexts) + 1)
    kv = make_paged_kv(gen, contexts, hkv, d, bs, cache_dtype, sz.device, num_blocks=num_blocks)
    query = torch.randn((sum(p["qlens"]), hq, d), generator=gen).to(qdtype).to(sz.device)
    starts = [0]
    for n in p["qlens"]:
        starts.append(starts[-1] + n)
    qsl = torch.tensor(starts, dtype=torch.int32, device=sz.device)
    tuning = {"block_m": p["block_m"], "block_n": p["block_n"]}
    return Case(query, qsl, kv, d ** -0.5, tuning)


def compact(kv: PagedKV) -> PagedKV:
    """The same logical K/V in a cache of only the blocks the tables use, so the
    CPU oracle does not copy a 32,768-block GPU cache per sequence."""
    used = []
    tables = kv.block_tables.clone()
    for i, ctx in enumerate(kv.context_lens.tolist()):
        nb = -(-ctx // kv.block_size)
        tables[i, :nb] = torch.arange(len(used), len(used) + nb, dtype=torch.int32)
        used += kv.block_tables[i, :nb].tolist()
    tables[tables >= len(used)] = 0
    idx = torch.tensor(used, dtype=torch.long, device=kv.kv_cache.device)
    scales = None if kv.kv_scales is None else kv.kv_scales[idx].cpu()
    return PagedKV(kv.kv_cache[idx].cpu(), scales, tables.cpu(), kv.context_lens.cpu())


def run_kernel(case: Case) -> torch.Tensor:
    """Kernel output into a NaN-poisoned `out=`, checked fully written."""
    out = torch.full_like(case.query, float("nan"))
    kv = case.kv
    res = paged_prefill(case.query, kv.kv_cache, kv.block_tables, case.query_start_loc, kv.context_lens,
                        case.scale, kv.kv_scales, out=out, **case.tuning)
    assert res.data_ptr() == out.data_ptr()
    assert res.dtype == case.query.dtype and res.shape == case.query.shape
    assert not torch.isnan(res).any(), "output rows left unwritten or a NaN cache slot was read"
    return res


def run_oracle(case: Case) -> torch.Tensor:
    kv = compact(case.kv)
    return oracle_prefill(case.query.cpu(), kv.kv_cache, kv.block_tables, case.query_start_loc.cpu(),
                          kv.context_lens, case.scale, kv.kv_scales)


def assert_close(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    rel, atol, rtol = TOLERANCES[dtype]
    out64 = out.double().cpu()
    err = rel_error(out64, ref)
    assert err <= rel, f"relative error {err:.3g} > {rel:g} for {dtype}"
    bad = (out64 - ref).abs() > atol + rtol * ref.abs()
    assert not bad.any(), (f"{int(bad.sum())} elements off, worst |diff| "
                           f"{float((out64 - ref).abs().max()):.3g} for {dtype}")


# Every (query dtype, cache kind) pair gets its own share of the profile's examples.
@pytest.mark.parametrize("query_dtype", QUERY_DTYPES, ids=str)
@pytest.mark.parametrize("cache_kind", CACHE_KINDS, ids=str)
@settings(max_examples=max(4, settings.default.max_examples // 3))
@given(data=st.data())
def test_prefill_matches_oracle(query_dtype: torch.dtype, cache_kind: object, data: st.DataObject) -> None:
    seed, p = data.draw(prefill_cases(cache_kind, query_dtype))
    case = build_case(seed, p)
    assert_close(run_kernel(case), run_oracle(case), query_dtype)


@settings(max_examples=8)
@given(prefill_cases(cache_kind=torch.int8), st.sampled_from([torch.int8, torch.float8_e4m3fn]))
def test_quantized_cache_close_to_float_cache(drawn: tuple[int, dict], qkind: torch.dtype) -> None:
    seed, p = drawn
    quant = run_kernel(build_case(seed, p, cache_kind=qkind))
    ref = run_kernel(build_case(seed, p, cache_kind="auto"))   # same draws, unquantised
    err = rel_error(quant, ref)
    assert err <= QUANT_VS_FLOAT_REL[qkind], f"{qkind} cache off the float cache by {err:.3g}"


def test_mixed_prefill_and_decode_batch() -> None:
    """Decode rows (query_len 1), an empty sequence, and extends with a cached prefix in one launch."""
    p = dict(heads=(9, 3), head_dim=64, block_size=16, query_dtype=torch.float16, cache_kind="auto",
             prefixes=[31, 0, 16, 5, 47], qlens=[1, 33, 0, 1, 17], block_m=16, block_n=32)
    case = build_case(1234, p)
    assert_close(run_kernel(case), run_oracle(case), torch.float16)


@pytest.mark.gpu
def test_gpu_int32_offsets_overflow_guard() -> None:
    """A 32,768-block cache whose far blocks sit past 2^31 elements (block 64, 8 KV
    heads, head_dim 128: 131,072 elements per block), contexts up to 4096."""
    p = dict(heads=(32, 8), head_dim=128, block_size=64, query_dtype=torch.bfloat16, cache_kind="auto",
             prefixes=[0, 3072, 1000], qlens=[4096, 1024, 1], block_m=None, block_n=None)
    case = build_case(7, p, cache_bytes_cap=12 << 30)     # 8.6 GB: whole, whatever the plan's cap
    kv = case.kv
    used = [b for row, ctx in zip(kv.block_tables.tolist(), kv.context_lens.tolist())
            for b in row[:-(-ctx // kv.block_size)]]
    assert kv.kv_cache.shape[0] == 32768
    assert max(used) * kv.kv_cache.stride(0) >= 2**31, "the draw must use blocks past 2^31 elements"
    assert_close(run_kernel(case), run_oracle(case), torch.bfloat16)
