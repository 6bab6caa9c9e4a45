"""kernels.write_kv (Triton) against a plain-indexing scatter and reference.quant.

The cache starts poisoned (NaN values, or NaN scales for int8), so the whole
cache is compared after the write: rows land in exactly their slots, slot -1
writes nothing and every other slot is untouched.

Exactness: unquantised rows and int8 values/scales must equal the oracle bit
for bit (the kernel uses correctly rounded divisions and round-half-even, like
torch). fp8 values must equal the oracle too: the kernel divides with div_rn
like the oracle's float32 division and rounds once to e4m3, ties to even (on
sm_90 one cvt.rn.satfinite.e4m3x2.f32, checked by test_kernel_compile.py; the
interpreter path rounds in our own arithmetic). Two narrow exceptions, see
`assert_fp8_matches`: +0 and -0 count as equal, and a value may be one ulp off
where the oracle's x / scale sits within 1e-6 (relative) of a tie, for at most
a handful of values. A path converting through float16 (two roundings) would
now fail: that is wanted, it is not the rounding the oracle defines.
fp8 scales must be exact.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.kernel_support import size_plan
from conformance.paged_cases import poisoned_cache
from kernels import write_kv
from reference.quant import FP8_E4M3_MAX, is_quantized, quantize_rows

PLAN = size_plan()
QUERY_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
CACHE_KINDS = ("auto", "int8", "fp8")


def bits(t: torch.Tensor) -> torch.Tensor:
    """Integer view of a tensor's bit patterns (NaN == NaN, -0 != +0)."""
    view = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.contiguous().view(view)


def fp8_ordinal(t: torch.Tensor) -> torch.Tensor:
    """e4m3 values as integers in value order (+0 and -0 both 0): neighbours differ by 1."""
    b = t.contiguous().view(torch.uint8).int()
    return torch.where(b >= 128, -(b - 128), b)


# Relative distance from an e4m3 tie within which a one-ulp difference is excused,
# and the share of written values (at least FP8_TIE_MIN_EXEMPT) that may use it.
FP8_TIE_REL = 1e-6
FP8_TIE_MAX_SHARE = 1e-3
FP8_TIE_MIN_EXEMPT = 4


def fp8_near_tie(pre: torch.Tensor, rel: float = FP8_TIE_REL) -> torch.Tensor:
    """Where float32 `pre` (|pre| <= 448) lies within `rel` (relative) of a midpoint
    between two adjacent e4m3 values; False for NaN.

    Why: the kernel and the oracle both divide x / scale in float32 and round once
    to e4m3 (ties to even), so they should agree bit for bit (they do under the
    interpreter; on the GPU it is unverified). Only at a near-tie can a last-bit
    difference in the division move the value across the midpoint and flip the
    rounding by one ulp. Anywhere else a one-ulp difference is wrong rounding (truncation, say),
    so the exemption is this narrow."""
    a = pre.double().abs()
    _, e = torch.frexp(a)                                   # a = m * 2**e, m in [0.5, 1)
    ulp = torch.pow(2.0, (e - 1).clamp_min(-6) - 3).double()  # 3 mantissa bits; fixed 2**-9 below 2**-6
    mid = (torch.floor(a / ulp) + 0.5) * ulp                # the tie between a's two neighbours: exact
    return ((a - mid).abs() <= rel * a) & a.isfinite()


def assert_fp8_matches(got: torch.Tensor, want: torch.Tensor, pre: torch.Tensor) -> None:
    """Every written e4m3 value equal to the oracle's, except a one-ulp difference
    where `fp8_near_tie(pre)`, and at most max(FP8_TIE_MIN_EXEMPT, 0.1 %) of the
    written values exempted that way (so wrong rounding cannot hide there).
    +0 and -0 count as equal: the interpreter path's round-half-even
    ((x + 1.5 * 2**23) - 1.5 * 2**23) turns -0 into +0, torch's cast keeps -0; they
    dequantise to the same zero. Unwritten slots must still be NaN."""
    # Outside the written rows everything must be untouched (still NaN).
    assert torch.equal(got.float().isnan(), want.float().isnan()), "fp8 NaN pattern differs (write outside slots?)"
    written = ~want.float().isnan()
    diff = (fp8_ordinal(got) - fp8_ordinal(want)).abs()
    wrong = (diff != 0) & written
    exempt = wrong & (diff == 1) & fp8_near_tie(pre)
    bad = wrong & ~exempt
    if bad.any():
        i = tuple(int(v) for v in bad.nonzero()[0])
        raise AssertionError(f"{int(bad.sum())} of {int(written.sum())} fp8 values differ from reference.quant "
                             f"(max {int(diff[bad].max())} ulp); e.g. at {i}: x / scale = {float(pre[i])!r}, "
                             f"got {float(got[i].float())}, want {float(want[i].float())}")
    limit = max(FP8_TIE_MIN_EXEMPT, int(FP8_TIE_MAX_SHARE * int(written.sum())))
    assert int(exempt.sum()) <= limit, (f"{int(exempt.sum())} fp8 values one ulp off at near-ties (> {limit}): "
                                        "ties are rounded the wrong way")


def oracle_scatter(key: torch.Tensor, value: torch.Tensor, cache: torch.Tensor, scales: torch.Tensor | None,
                   slots: list[int]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """What the cache must hold afterwards, by plain indexing on CPU copies. For an
    fp8 cache also the oracle's float32 x / scale before rounding (NaN where
    nothing is written), for `assert_fp8_matches`; None otherwise."""
    cache, scales = cache.cpu().clone(), None if scales is None else scales.cpu().clone()
    block_size = cache.shape[2]
    quant = is_quantized(cache.dtype)
    fp8 = cache.dtype == torch.float8_e4m3fn
    pre = torch.full(cache.shape, float("nan")) if fp8 else None
    for i, slot in enumerate(slots):
        if slot == -1:
            continue
        blk, off = divmod(slot, block_size)
        for which, rows in ((0, key), (1, value)):
            row = rows[i].cpu()
            if quant:
                q, s = quantize_rows(row, cache.dtype)
                cache[blk, which, off], scales[blk, which, off] = q, s
                if fp8:   # the same float32 ops as quantize_rows, stopped before the cast
                    pre[blk, which, off] = (row.float() / s.unsqueeze(-1)).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX)
            else:
                cache[blk, which, off] = row
    return cache, scales, pre


def run_write(seed: int, num_tokens: int, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int,
              dtype: torch.dtype, kind: str, skip_every: int, slot_dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(seed)
    cache_dtype = {"auto": dtype, "int8": torch.int8, "fp8": torch.float8_e4m3fn}[kind]
    cache, scales = poisoned_cache(num_blocks, block_size, num_kv_heads, head_dim, cache_dtype, PLAN.device)
    num_tokens = min(num_tokens, num_blocks * block_size)
    slots = torch.randperm(num_blocks * block_size, generator=gen)[:num_tokens]
    if skip_every:
        slots[::skip_every] = -1
    # Scale rows differently so per-row scales differ; one all-zero row hits the 1e-6 floor.
    key = torch.randn((num_tokens, num_kv_heads, head_dim), generator=gen) * 4 ** torch.randn(
        (num_tokens, num_kv_heads, 1), generator=gen)
    value = torch.randn((num_tokens, num_kv_heads, head_dim), generator=gen)
    key[-1, 0] = 0.0
    key, value = key.to(dtype).to(PLAN.device), value.to(dtype).to(PLAN.device)
    want_cache, want_scales, want_pre = oracle_scatter(key, value, cache, scales, slots.tolist())
    write_kv(key, value, cache, slots.to(slot_dtype).to(PLAN.device), scales)
    got = cache.cpu()
    if kind == "fp8":
        assert_fp8_matches(got, want_cache, want_pre)
    else:
        assert torch.equal(bits(got), bits(want_cache)), "cache differs from the oracle scatter"
    if scales is not None:
        assert torch.equal(bits(scales.cpu()), bits(want_scales)), "scales differ from reference.quant"


@settings(max_examples=PLAN.write_examples)
@given(seed=st.integers(0, 2**31 - 1), num_tokens=st.integers(1, PLAN.write_max_tokens),
       num_blocks=st.integers(1, max(12, PLAN.write_max_tokens // 8)), block_size=st.sampled_from((8, 16, 32, 64)),
       num_kv_heads=st.sampled_from((1, 2, 3, 8)), head_dim=st.sampled_from((64, 80, 96, 128, 256)),
       dtype=st.sampled_from(QUERY_DTYPES), kind=st.sampled_from(CACHE_KINDS),
       skip_every=st.sampled_from((0, 2, 5)), slot_dtype=st.sampled_from((torch.int32, torch.int64)))
def test_write_kv_matches_scatter(seed: int, num_tokens: int, num_blocks: int, block_size: int,
                                  num_kv_heads: int, head_dim: int, dtype: torch.dtype, kind: str,
                                  skip_every: int, slot_dtype: torch.dtype) -> None:
    run_write(seed, num_tokens, num_blocks, block_size, num_kv_heads, head_dim, dtype, kind, skip_every,
              slot_dtype)


@pytest.mark.parametrize("kind", CACHE_KINDS)
@pytest.mark.parametrize("dtype", QUERY_DTYPES)
def test_write_kv_every_dtype(dtype: torch.dtype, kind: str) -> None:
    run_write(7, 24, 4, 16, 3, 80, dtype, kind, skip_every=3, slot_dtype=torch.int64)


def test_write_kv_all_skipped_changes_nothing() -> None:
    run_write(1, 16, 2, 8, 2, 64, torch.float16, "int8", skip_every=1, slot_dtype=torch.int32)


def test_int8_rounds_half_to_even() -> None:
    """Rows built so x / scale hits exact .5 ties: the kernel must round them like torch.round."""
    row = torch.tensor([127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5] + [0.0] * 56)
    key = row.view(1, 1, 64).to(PLAN.device)
    cache, scales = poisoned_cache(1, 8, 1, 64, torch.int8, PLAN.device)
    write_kv(key, key.clone(), cache, torch.tensor([3], device=PLAN.device), scales)
    q, s = quantize_rows(row, torch.int8)
    assert float(s) == 1.0
    assert torch.equal(cache[0, 0, 3, 0].cpu(), q)
    assert cache[0, 0, 3, 0, :8].tolist() == [127, 0, 2, 2, 0, -2, -2, 126]


@pytest.mark.parametrize("dtype", QUERY_DTYPES)
def test_fp8_rounds_half_to_even(dtype: torch.dtype) -> None:
    """amax 448 makes the scale exactly 1, so x / scale = x lands exactly on e4m3
    ties (no near-tie exemption applies): the kernel must round them to even,
    like torch's cast; half away from zero or truncation fails here."""
    ties = [1.0625, 1.1875, 400.0, 432.0, 2.0**-10, 3 * 2.0**-10, 5 * 2.0**-10, 15 * 2.0**-10]
    even = [1.0, 1.25, 384.0, 448.0, 0.0, 2.0**-8, 2.0**-8, 2.0**-6]
    row = torch.tensor([448.0] + ties + [-t for t in ties] + [1.03125, 1.09375] + [0.0] * 45)
    key = row.view(1, 1, 64).to(dtype)
    assert torch.equal(key.float().flatten(), row)    # every value is exact in the query dtype
    cache, scales = poisoned_cache(1, 8, 1, 64, torch.float8_e4m3fn, PLAN.device)
    write_kv(key.to(PLAN.device), key.clone().to(PLAN.device), cache, torch.tensor([3], device=PLAN.device), scales)
    q, s = quantize_rows(row, torch.float8_e4m3fn)
    assert float(s) == 1.0
    assert q[:19].float().tolist() == [448.0] + even + [-e for e in even] + [1.0, 1.125]
    for which in (0, 1):
        got = cache[0, which, 3, 0].cpu()
        assert torch.equal(fp8_ordinal(got), fp8_ordinal(q)), f"got {got[:19].float().tolist()}"
        assert float(scales[0, which, 3, 0]) == 1.0


def test_fp8_tie_exemption_is_narrow() -> None:
    """The helpers themselves: midpoints are found (also subnormal ones), grid
    points and values 2e-6 away are not, and a one-ulp difference passes only
    at a near-tie and only a handful of times."""
    mids = torch.tensor([1.0625, -1.1875, 400.0, 2.0**-10, 15 * 2.0**-10, 1.0625 * (1 + 5e-7)])
    away = torch.tensor([1.0, 448.0, 0.0, 2.0**-9, 1.0625 * (1 + 2e-6), 400.0 * (1 - 2e-6), float("nan")])
    assert fp8_near_tie(mids).all() and not fp8_near_tie(away).any()
    pre = torch.tensor([1.0625, 1.1, 3.0])
    want = pre.to(torch.float8_e4m3fn)                      # 1.0, 1.125, 3.0
    assert_fp8_matches(torch.tensor([1.125, 1.125, 3.0]).to(torch.float8_e4m3fn), want, pre)
    with pytest.raises(AssertionError, match="differ from reference.quant"):
        assert_fp8_matches(torch.tensor([1.0, 1.0, 3.0]).to(torch.float8_e4m3fn), want, pre)
    ties = torch.full((100,), 1.0625)
    with pytest.raises(AssertionError, match="near-ties"):
        assert_fp8_matches(torch.full((100,), 1.125).to(torch.float8_e4m3fn), ties.to(torch.float8_e4m3fn), ties)


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["auto", "int8"])
def test_write_kv_huge_cache_int64_offsets(kind: str) -> None:
    """32,768 blocks x 2**17 elements: slots in the top half overflow int32 offsets."""
    num_blocks, block_size, num_slots = 32768, 64, 32768 * 64
    cache, scales = poisoned_cache(num_blocks, block_size, 8, 128,
                                   torch.bfloat16 if kind == "auto" else torch.int8, "cuda")
    gen = torch.Generator().manual_seed(0)
    slots = torch.randperm(num_slots, generator=gen)[:256]
    slots[:2] = torch.tensor([num_slots - 1, 16384 * block_size])
    assert len(set(slots.tolist())) == 256 and (int(slots.max()) // block_size) * cache.stride(0) >= 2**31
    key = torch.randn((256, 8, 128), generator=gen).bfloat16()
    value = torch.randn((256, 8, 128), generator=gen).bfloat16()
    write_kv(key.cuda(), value.cuda(), cache, slots.cuda(), scales)
    blk, off = (slots // block_size).cuda(), (slots % block_size).cuda()
    for which, rows in ((0, key), (1, value)):
        got = cache[blk, which, off].cpu()
        if kind == "auto":
            assert torch.equal(got, rows)
        else:
            q, s = quantize_rows(rows, torch.int8)
            assert torch.equal(got, q) and torch.equal(scales[blk, which, off].cpu(), s)
