"""kernels.paged_prefill against the float64 oracle reference.attention.paged_prefill.

Tolerances (the kernel's error comes from rounding Q/K/V and P to the dot dtype
and the output to the query dtype; fp32 runs input_precision="ieee", so no
tf32 allowance; the fp32 bound leaves room for exp2.approx and 4k-term sums on GPU):

| query dtype | rel ‖out − ref‖/‖ref‖ per row | elementwise |out − ref| <= atol·RMS(row) + rtol·|ref| |
|---|---|---|
| float32  | 2e-5 | 5e-5·RMS + 2e-5·|ref| |
| float16  | 2e-3 | 4e-3·RMS + 4e-3·|ref| |
| bfloat16 | 1.6e-2 | 3e-2·RMS + 3e-2·|ref| |

A row is one query token and head (conformance/kernel_support.py `row_errors`).
That table is for compiled GPU code; under the interpreter (CPU, dots in float32)
the tighter `_CPU_TOLERANCES` of kernel_support.py apply (worst seen on CPU here:
float32 4.8e-7, float16 3.0e-4, bfloat16 2.4e-3 per row).

Quantised caches (int8, fp8 e4m3) are held to the same table against the oracle
fed the dequantised cache (dequantisation is exact in the dot dtype). The
quantisation error itself is bounded against the float64 oracle on a bf16 cache
holding the same K/V (bf16 query): rel int8 3e-2, fp8 1e-1, decode's bounds
(kernel_support.quantised_vs_bf16_rel; per-element steps of amax/254 and 2^-4
relative; measured on CPU, contexts 10-115: int8 0.8-0.9 %, fp8 3.1-3.2 %).

Coverage: Hypothesis runs derandomised in CI, so the nine (query dtype, cache
kind) variants of the random test would make the same choices; each passes a
salt that rotates every sampled list, so they draw different shapes (together:
every head dim, block size, head pair and tile override). `test_prefill_corners`
runs every head_dim x block_size once on a fixed batch.

The same tests run on CPU (Triton interpreter, small sizes) and on CUDA (full
sizes, a 32,768-block cache); `sizes()` makes that choice.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from typing import TypeVar

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.kernel_support import (Tolerance, assert_guard_intact, poisoned_like, quantised_vs_bf16_rel,
                                        rotated, tolerance)
from conformance.kernel_support import assert_close as rows_close
from conformance.paged_cases import PagedKV, make_paged_kv, rel_error
from kernels.paged_prefill import paged_prefill
from reference.attention import paged_prefill as oracle_prefill

TOLERANCES = {  # query dtype -> (rel, atol, rtol)
    torch.float32: (2e-5, 5e-5, 2e-5),
    torch.float16: (2e-3, 4e-3, 4e-3),
    torch.bfloat16: (1.6e-2, 3e-2, 3e-2),
}
HEAD_DIMS = (64, 80, 96, 128, 256)
BLOCK_SIZES = (8, 16, 32, 64)
QUERY_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
CACHE_KINDS = ("auto", torch.int8, torch.float8_e4m3fn)
T = TypeVar("T")


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


def _gpu_cache_cap() -> int:
    """Bytes one drawn cache may take: 12 GiB, shared out so that every pytest-xdist
    worker can hold its largest cache at once in under half the card (nine prefill
    variants drew 12 GiB caches side by side and ran an 80 GB H100 out of memory).
    PAGEDLM_TEST_CACHE_CAP_GIB sets it outright (ci/memcheck_conformance.py, where
    memcheck's own device memory comes on top). Fewer blocks; the same shapes and draws.
    The int32-offset tests size their caches themselves."""
    if "PAGEDLM_TEST_CACHE_CAP_GIB" in os.environ:
        return int(float(os.environ["PAGEDLM_TEST_CACHE_CAP_GIB"]) * (1 << 30))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    share = torch.cuda.get_device_properties(0).total_memory // (2 * workers)
    return min(12 << 30, share)


def sizes() -> Sizes:
    """CPU: interpreter-sized shapes with small tiles so several query/KV tiles and
    the diagonal show up in tiny contexts. CUDA: the heuristic's tiles and real sizes."""
    if torch.cuda.is_available():
        return Sizes("cuda", ((1, 1), (9, 3), (8, 2), (16, 1), (32, 8), (32, 32)), 6, 3072,
                     (None, 64, 128), (None, 32, 64), 32768, _gpu_cache_cap())
    return Sizes("cpu", ((1, 1), (2, 1), (4, 4), (9, 3), (8, 2), (16, 1)), 3, 80,
                 (16, 32), (16, 32), None, 1 << 30)


@dataclass
class Case:
    query: torch.Tensor
    query_start_loc: torch.Tensor
    kv: PagedKV
    scale: float
    tuning: dict


def _pick(draw: st.DrawFn, values: Sequence[T], salt: int) -> T:
    """sampled_from over `values` rotated by `salt` (kernel_support.rotated)."""
    return draw(st.sampled_from(rotated(values, salt)))


def _length(draw: st.DrawFn, edges: list[int], cap: int, salt: int) -> int:
    choice = _pick(draw, edges + [-1], salt)
    return draw(st.integers(0, cap)) if choice < 0 else min(max(choice, 0), cap)


@st.composite
def prefill_cases(draw: st.DrawFn, cache_kind: object = None, query_dtype: torch.dtype | None = None,
                  salt: int = 0) -> tuple[int, dict]:
    """A seed and the shape parameters; tensors are built from the seed by `build_case`.
    `salt` (one per test variant) rotates every sampled list, see `_pick`."""
    sz = sizes()
    hq, hkv = _pick(draw, sz.heads, salt)
    block_m = _pick(draw, sz.block_ms, salt)
    bm = block_m or 128
    bs = _pick(draw, BLOCK_SIZES, salt)
    num_seqs = _pick(draw, range(1, sz.max_seqs + 1), salt)
    max_query = 4 * bm if sz.device == "cuda" else 2 * bm + 3
    prefixes, qlens = [], []
    for _ in range(num_seqs):
        qlens.append(_length(draw, [0, 1, 1, bm - 1, bm, bm + 1, 2 * bm + 3], max_query, salt))
        prefixes.append(_length(draw, [0, 0, bs - 1, bs, bs + 1, 2 * bs, sz.max_prefix], sz.max_prefix, salt))
    if sum(qlens) == 0:
        qlens[0] = 1
    return draw(st.integers(0, 2**31 - 1)), dict(
        heads=(hq, hkv), head_dim=_pick(draw, HEAD_DIMS, salt), block_size=bs,
        query_dtype=query_dtype or draw(st.sampled_from(QUERY_DTYPES)),
        cache_kind=cache_kind or draw(st.sampled_from(CACHE_KINDS)),
        prefixes=prefixes, qlens=qlens, block_m=block_m, block_n=_pick(draw, sz.block_ns, salt))


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
    # Index the bytes (bit-exact): not every torch build indexes float8 tensors on CUDA.
    raw = kv.kv_cache.view(torch.uint8) if kv.kv_cache.element_size() == 1 else kv.kv_cache
    return PagedKV(raw[idx].cpu().view(kv.kv_cache.dtype), scales, tables.cpu(), kv.context_lens.cpu())


def run_kernel(case: Case) -> torch.Tensor:
    """Kernel output into a NaN-poisoned `out=` inside a NaN guard, checked fully
    written and nothing written past its ends (rows past a query's length)."""
    out = poisoned_like(case.query)
    kv = case.kv
    res = paged_prefill(case.query, kv.kv_cache, kv.block_tables, case.query_start_loc, kv.context_lens,
                        case.scale, kv.kv_scales, out=out, **case.tuning)
    assert_guard_intact(out, "paged_prefill")
    assert res.data_ptr() == out.data_ptr()
    assert res.dtype == case.query.dtype and res.shape == case.query.shape
    assert not torch.isnan(res).any(), "output rows left unwritten or a NaN cache slot was read"
    return res


def run_oracle(case: Case) -> torch.Tensor:
    kv = compact(case.kv)
    return oracle_prefill(case.query.cpu(), kv.kv_cache, kv.block_tables, case.query_start_loc.cpu(),
                          kv.context_lens, case.scale, kv.kv_scales)


def assert_close(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    """Per output row (token, head) against the oracle: this module's table on a GPU,
    the interpreter's tighter one (kernel_support) on CPU."""
    tol = Tolerance(*TOLERANCES[dtype]) if sizes().device == "cuda" else tolerance(dtype)
    rows_close(out, ref, tol, f"paged_prefill {dtype}")


# Every (query dtype, cache kind) pair gets its own share of the profile's examples,
# and its own salt so the derandomised variants do not repeat one another's shapes.
@pytest.mark.parametrize("query_dtype", QUERY_DTYPES, ids=str)
@pytest.mark.parametrize("cache_kind", CACHE_KINDS, ids=str)
@settings(max_examples=max(4, settings.default.max_examples // 3))
@given(data=st.data())
def test_prefill_matches_oracle(query_dtype: torch.dtype, cache_kind: object, data: st.DataObject) -> None:
    salt = QUERY_DTYPES.index(query_dtype) + len(QUERY_DTYPES) * CACHE_KINDS.index(cache_kind)
    seed, p = data.draw(prefill_cases(cache_kind, query_dtype, salt))
    case = build_case(seed, p)
    assert_close(run_kernel(case), run_oracle(case), query_dtype)


def fixed_batch(head_dim: int, block_size: int, heads: tuple[int, int], query_dtype: torch.dtype,
                cache_kind: object, long_prefix: int) -> dict:
    """A decode row, a multi-tile extend on a cached prefix, a short extend across a
    block edge and a fresh one-tile prompt. CPU: 16-row tiles; GPU: the heuristic's."""
    gpu = sizes().device == "cuda"
    bm = 128 if gpu else 16
    return dict(heads=heads, head_dim=head_dim, block_size=block_size, query_dtype=query_dtype,
                cache_kind=cache_kind, prefixes=[block_size + 1, long_prefix, block_size - 2, 0],
                qlens=[1, 2 * bm + 3, 5, bm], block_m=None if gpu else bm,
                # 32: several blocks per KV tile (8) or one (32); 16: one (16) or a quarter (64)
                block_n=None if gpu else (16 if block_size in (16, 64) else 32))


# Every head_dim x block_size once (bf16, auto cache), then quantised corners; the
# head pairs cycle through sizes().heads.
_CORNER_DTYPES = [(d, bs, torch.bfloat16, "auto") for d, bs in product(HEAD_DIMS, BLOCK_SIZES)] + [
    (256, 8, torch.float16, torch.int8), (80, 64, torch.float32, torch.float8_e4m3fn)]
_HEADS = sizes().heads
CORNERS = [(d, bs, _HEADS[i % len(_HEADS)], q, k) for i, (d, bs, q, k) in enumerate(_CORNER_DTYPES)]


@pytest.mark.parametrize("head_dim,block_size,heads,query_dtype,kind", CORNERS,
                         ids=["-".join(str(x).replace("torch.", "").replace(" ", "") for x in c)
                              for c in CORNERS])
def test_prefill_corners(head_dim: int, block_size: int, heads: tuple[int, int], query_dtype: torch.dtype,
                         kind: object) -> None:
    long_prefix = block_size - 1 + (1000 if sizes().device == "cuda" else 0)
    case = build_case(head_dim * 7 + block_size, fixed_batch(head_dim, block_size, heads, query_dtype, kind,
                                                             long_prefix))
    assert_close(run_kernel(case), run_oracle(case), query_dtype)


@pytest.mark.parametrize("kind,head_dim,block_size,seed", [
    (torch.int8, 128, 16, 0), (torch.float8_e4m3fn, 128, 16, 0),
    (torch.int8, 80, 32, 1), (torch.float8_e4m3fn, 256, 8, 1)], ids=str)
def test_quantised_close_to_bf16_cache(kind: torch.dtype, head_dim: int, block_size: int, seed: int) -> None:
    """The quantisation error itself: the kernel on a quantised cache against the
    float64 oracle on a bf16 cache holding the same K/V (not the kernel on both,
    where a bug common to the two paths would cancel)."""
    p = fixed_batch(head_dim, block_size, (4, 2), torch.bfloat16, kind, sizes().max_prefix)
    out_q = run_kernel(build_case(seed, p))
    ref_bf16 = run_oracle(build_case(seed, p, cache_kind="auto"))   # same draws, bf16 cache
    err = rel_error(out_q, ref_bf16)
    assert err <= quantised_vs_bf16_rel(kind), f"{kind} cache off the bf16-cache oracle by {err:.3g}"


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
