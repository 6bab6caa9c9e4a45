"""kernels.write_kv (Triton) against a plain-indexing scatter and reference.quant.

The cache starts poisoned (NaN values, or NaN scales for int8), so the whole
cache is compared after the write: rows land in exactly their slots, slot -1
writes nothing and every other slot is untouched.

Exactness: unquantised rows and int8 values/scales must equal the oracle bit
for bit (the kernel uses correctly rounded divisions and round-half-even, like
torch). fp8 values may differ by one ulp: the oracle rounds float32 -> e4m3
once (ties to even). On sm_90 Triton emits one cvt.rn.satfinite.e4m3x2.f32
(checked by test_kernel_compile.py), so it matches exactly there; other GPUs /
Triton versions convert through float16 (two roundings, one ulp off at a
near-tie), and the interpreter path rounds in our own arithmetic. fp8 scales
must still be exact.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.kernel_support import size_plan
from conformance.paged_cases import poisoned_cache
from kernels import write_kv
from reference.quant import is_quantized, quantize_rows

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


def oracle_scatter(key: torch.Tensor, value: torch.Tensor, cache: torch.Tensor, scales: torch.Tensor | None,
                   slots: list[int]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What the cache must hold afterwards, by plain indexing on CPU copies."""
    cache, scales = cache.cpu().clone(), None if scales is None else scales.cpu().clone()
    block_size = cache.shape[2]
    quant = is_quantized(cache.dtype)
    for i, slot in enumerate(slots):
        if slot == -1:
            continue
        blk, off = divmod(slot, block_size)
        for which, rows in ((0, key), (1, value)):
            row = rows[i].cpu()
            if quant:
                q, s = quantize_rows(row, cache.dtype)
                cache[blk, which, off], scales[blk, which, off] = q, s
            else:
                cache[blk, which, off] = row
    return cache, scales


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
    want_cache, want_scales = oracle_scatter(key, value, cache, scales, slots.tolist())
    write_kv(key, value, cache, slots.to(slot_dtype).to(PLAN.device), scales)
    got = cache.cpu()
    if kind == "fp8":
        diff = (fp8_ordinal(got) - fp8_ordinal(want_cache)).abs()
        assert int(diff.max()) <= 1, f"fp8 values off by {int(diff.max())} ulp"
        # Outside the written rows everything must be untouched (still NaN).
        assert torch.equal(got.float().isnan(), want_cache.float().isnan())
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
