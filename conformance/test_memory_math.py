"""reference.memory: textbook worked examples, exactly, and properties of the closed forms.

The independent oracle for bytes per token/block is the cache contract itself: the
bytes of the tensors the engine allocates (kernels/README.md), measured with torch.
"""
from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reference import memory as mem

GiB = 2**30
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16,
                "bfloat16": torch.bfloat16, "fp8": torch.float8_e4m3fn, "int8": torch.int8}

dims = st.integers(1, 256)
dtype_bytes = st.sampled_from([1, 2, 4])
block_sizes = st.integers(1, 128)


# --- textbook worked examples ---

def test_bytes_per_token_32_layers_32_heads_128_fp16() -> None:
    assert mem.bytes_per_token(32, 32, 128, 2) == 524_288 == 512 * 1024


def test_100_tokens_at_block_16() -> None:
    assert mem.blocks_needed(100, 16) == 7
    assert 100 - 6 * 16 == 4                      # blocks 0-5 full, 4 tokens in block 6
    assert mem.last_block_waste(100, 16) == 12
    assert mem.waste_fraction(100, 16) == Fraction(12, 112)
    assert f"{float(mem.waste_fraction(100, 16)):.1%}" == "10.7%"


def test_opt13b_on_a_40gb_card() -> None:
    budget = mem.kv_budget(40 * GiB, 1.0, weights=26 * GiB, activations=3 * GiB,
                           overhead=1 * GiB)
    assert budget == 10 * GiB
    block = mem.bytes_per_block(mem.bytes_per_token(40, 40, 128, 2), 16)
    assert block == 2 * 40 * 40 * 128 * 2 * 16 == 13_107_200   # 12.5 MiB exactly
    blocks = mem.num_blocks_in_budget(budget, block)
    assert blocks == 819
    assert mem.token_capacity(blocks, 16) == 13_104
    # The usual rough answer, "≈800 blocks / 12,800 tokens", rounds the block up to
    # 12.8 "MB" (10,240 MB / 12.8 MB = 800); the exact block is 12.5 MiB, hence 819.
    assert Fraction(10_240) / Fraction("12.8") == 800
    assert block == Fraction("12.5") * 2**20


def test_quantised_cache_adds_one_float32_scale_per_token_and_kv_head() -> None:
    assert mem.scale_bytes_per_head_for("int8") == mem.scale_bytes_per_head_for("fp8") == 4
    for dtype in ("float32", "float16", "bfloat16"):
        assert mem.scale_bytes_per_head_for(dtype) == 0
    # SmolLM2-135M, int8: 2 x 30 x 3 x (64 x 1 + 4)
    assert mem.bytes_per_token(30, 3, 64, 1, scale_bytes_per_head=4) == 12_240


@given(layers=st.integers(1, 4), kv_heads=st.integers(1, 4), head_dim=st.integers(1, 32),
       block_size=st.integers(1, 8), num_blocks=st.integers(1, 4),
       dtype=st.sampled_from(sorted(TORCH_DTYPES)))
def test_block_bytes_equal_the_cache_tensors_the_contract_allocates(
        layers: int, kv_heads: int, head_dim: int, block_size: int, num_blocks: int,
        dtype: str) -> None:
    # Per layer kv_cache[num_blocks, 2, block_size, kv_heads, head_dim] and, for quantised
    # caches, kv_scales[num_blocks, 2, block_size, kv_heads] in float32.
    cache = torch.empty(num_blocks, 2, block_size, kv_heads, head_dim, dtype=TORCH_DTYPES[dtype])
    nbytes = cache.numel() * cache.element_size()
    if dtype in mem.QUANTISED_DTYPES:
        scales = torch.empty(num_blocks, 2, block_size, kv_heads, dtype=torch.float32)
        nbytes += scales.numel() * scales.element_size()
    per_token = mem.bytes_per_token(layers, kv_heads, head_dim, mem.dtype_bytes(dtype),
                                    mem.scale_bytes_per_head_for(dtype))
    assert layers * nbytes == num_blocks * mem.bytes_per_block(per_token, block_size)


def test_utilization_is_exact_decimal() -> None:
    # 0.9 means 9/10: no float rounding of 80 GiB x 0.9.
    assert mem.usable_memory(80 * GiB, 0.9) == 80 * GiB * 9 // 10
    assert mem.usable_memory(80 * GiB, "0.9") == mem.usable_memory(80 * GiB, Fraction(9, 10))
    assert mem.usable_memory(7, 0.5) == 3                       # floored


# --- bad input ---

@pytest.mark.parametrize("call, name", [
    (lambda: mem.bytes_per_token(0, 8, 128, 2), "layers"),
    (lambda: mem.bytes_per_token(32, -1, 128, 2), "kv_heads"),
    (lambda: mem.bytes_per_token(32, 8, 0, 2), "head_dim"),
    (lambda: mem.bytes_per_token(32, 8, 128, 0), "dtype_bytes"),
    (lambda: mem.bytes_per_token(32, 8, 128, 2, -4), "scale_bytes_per_head"),
    (lambda: mem.bytes_per_token(32, 8, 128.0, 2), "head_dim"),
    (lambda: mem.bytes_per_token(True, 8, 128, 2), "layers"),
    (lambda: mem.bytes_per_block(1024, 0), "block_size"),
    (lambda: mem.blocks_needed(-1, 16), "tokens"),
    (lambda: mem.num_blocks_in_budget(-5, 100), "budget"),
    (lambda: mem.num_blocks_in_budget(5, 0), "block_bytes"),
    (lambda: mem.token_capacity(-1, 16), "num_blocks"),
    (lambda: mem.kv_budget(0, 1, 0), "gpu_memory"),
    (lambda: mem.kv_budget(GiB, 1.5, 0), "utilization"),
    (lambda: mem.kv_budget(GiB, 0, 0), "utilization"),
    (lambda: mem.kv_budget(GiB, "most", 0), "utilization"),
    (lambda: mem.kv_budget(GiB, 1, -1), "weights"),
    (lambda: mem.dtype_bytes("fp4"), "dtype"),
])
def test_bad_input_raises_value_error_naming_the_argument(call, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        call()


def test_negative_budget_names_the_largest_term() -> None:
    with pytest.raises(ValueError, match="largest term: weights") as info:
        mem.kv_budget(40 * GiB, 1, weights=38 * GiB, activations=3 * GiB, overhead=GiB)
    assert "exceed" in str(info.value) and f"{2 * GiB:,}" in str(info.value)
    with pytest.raises(ValueError, match="largest term: activations"):
        mem.kv_budget(40 * GiB, 0.5, weights=GiB, activations=30 * GiB)
    assert mem.kv_budget(40 * GiB, 1, weights=40 * GiB) == 0   # exactly full is not an error


def test_zero_tokens_need_no_blocks_and_waste_nothing() -> None:
    assert mem.blocks_needed(0, 16) == mem.last_block_waste(0, 16) == 0
    assert mem.waste_fraction(0, 16) == 0


# --- properties ---

@given(layers=dims, kv_heads=dims, head_dim=dims, nbytes=dtype_bytes, scale=st.sampled_from([0, 4]),
       which=st.integers(0, 3), bump=st.integers(1, 64))
def test_bytes_per_token_strictly_increases_in_each_factor(
        layers: int, kv_heads: int, head_dim: int, nbytes: int, scale: int, which: int,
        bump: int) -> None:
    base = [layers, kv_heads, head_dim, nbytes]
    bigger = list(base)
    bigger[which] += bump
    assert mem.bytes_per_token(*bigger, scale) > mem.bytes_per_token(*base, scale)
    assert mem.bytes_per_token(*base, scale + 4) > mem.bytes_per_token(*base, scale)


@given(budget=st.integers(0, 2**42), extra=st.integers(0, 2**40),
       block_bytes=st.integers(1, 2**30), smaller=st.integers(0, 2**20))
def test_blocks_are_monotone_in_budget_and_block_bytes(
        budget: int, extra: int, block_bytes: int, smaller: int) -> None:
    n = mem.num_blocks_in_budget(budget, block_bytes)
    assert mem.num_blocks_in_budget(budget + extra, block_bytes) >= n
    assert mem.num_blocks_in_budget(budget, block_bytes + smaller) <= n


@given(layers=dims, kv_heads=dims, head_dim=dims, nbytes=dtype_bytes, scale=st.sampled_from([0, 4]),
       block_size=block_sizes, budget=st.integers(0, 2**44))
def test_capacity_fits_the_budget_and_one_more_block_does_not(
        layers: int, kv_heads: int, head_dim: int, nbytes: int, scale: int, block_size: int,
        budget: int) -> None:
    per_token = mem.bytes_per_token(layers, kv_heads, head_dim, nbytes, scale)
    blocks = mem.num_blocks_in_budget(budget, mem.bytes_per_block(per_token, block_size))
    capacity = mem.token_capacity(blocks, block_size)
    assert capacity == blocks * block_size
    assert capacity * per_token <= budget < (capacity + block_size) * per_token


@given(tokens=st.integers(0, 10**7), block_size=block_sizes)
def test_blocks_needed_is_the_least_cover_and_waste_is_under_a_block(
        tokens: int, block_size: int) -> None:
    blocks = mem.blocks_needed(tokens, block_size)
    waste = mem.last_block_waste(tokens, block_size)
    assert blocks * block_size - tokens == waste
    assert 0 <= waste < block_size
    assert (blocks - 1) * block_size < tokens or blocks == 0
    frac = mem.waste_fraction(tokens, block_size)
    assert 0 <= frac < 1
    if blocks:
        assert frac == Fraction(waste, blocks * block_size)


@given(layers=dims, kv_heads=st.integers(1, 64), group=st.integers(1, 16), head_dim=dims,
       nbytes=dtype_bytes, scale=st.sampled_from([0, 4]))
def test_gqa_divides_kv_bytes_by_the_group(
        layers: int, kv_heads: int, group: int, head_dim: int, nbytes: int, scale: int) -> None:
    heads = kv_heads * group   # query heads; MHA would keep one KV head per query head
    mha = mem.bytes_per_token(layers, heads, head_dim, nbytes, scale)
    gqa = mem.bytes_per_token(layers, heads // group, head_dim, nbytes, scale)
    assert gqa * group == mha


@given(gpu=st.integers(1, 2**40), util=st.fractions(Fraction(1, 100), 1, max_denominator=1000),
       parts=st.lists(st.integers(0, 2**38), min_size=3, max_size=3))
def test_kv_budget_is_usable_memory_minus_the_parts(gpu: int, util: Fraction,
                                                    parts: list[int]) -> None:
    usable = mem.usable_memory(gpu, util)
    assert usable <= gpu * util < usable + 1
    if sum(parts) > usable:
        with pytest.raises(ValueError, match="no memory left for the KV cache"):
            mem.kv_budget(gpu, util, *parts)
    else:
        assert mem.kv_budget(gpu, util, *parts) + sum(parts) == usable
