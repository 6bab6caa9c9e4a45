"""engine.core.kv_memory (the engine's cache sizing) against reference.memory (the oracle)."""
from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core import kv_memory as kvm
from reference import memory as mem

GiB = 2**30
dtypes = st.sampled_from(sorted(mem.DTYPE_BYTES))


@given(layers=st.integers(1, 128), heads=st.integers(1, 64), head_dim=st.integers(1, 512),
       dtype=dtypes, block_size=st.integers(1, 128), num_blocks=st.integers(0, 10**5))
def test_sizes_agree_with_the_closed_forms(layers: int, heads: int, head_dim: int, dtype: str,
                                           block_size: int, num_blocks: int) -> None:
    size, scale = kvm.dtype_bytes(dtype), kvm.scale_bytes(dtype)
    assert (size, scale) == (mem.dtype_bytes(dtype), mem.scale_bytes_per_head_for(dtype))
    per_token = mem.bytes_per_token(layers, heads, head_dim, size, scale)
    per_block = mem.bytes_per_block(per_token, block_size)
    assert kvm.token_bytes(layers, heads, head_dim, size, scale) == per_token
    assert kvm.block_bytes(block_size, layers, heads, head_dim, size, scale) == per_block
    assert kvm.kv_cache_bytes(num_blocks, block_size, layers, heads, head_dim, size,
                              scale) == num_blocks * per_block
    budget = num_blocks * per_block + per_block - 1       # one byte short of another block
    assert kvm.num_blocks_for_budget(budget, block_size, layers, heads, head_dim, size,
                                     scale) == mem.num_blocks_in_budget(budget, per_block)
    assert kvm.token_capacity(num_blocks, block_size) == mem.token_capacity(num_blocks, block_size)


@given(tokens=st.integers(0, 10**6), block_size=st.integers(1, 256))
def test_blocks_and_waste_agree(tokens: int, block_size: int) -> None:
    assert kvm.blocks_for_tokens(tokens, block_size) == mem.blocks_needed(tokens, block_size)
    assert kvm.cdiv(tokens, block_size) == mem.blocks_needed(tokens, block_size)
    assert kvm.last_block_waste(tokens, block_size) == mem.last_block_waste(tokens, block_size)


@given(gpu=st.integers(1, 200 * GiB), pct=st.integers(1, 100), weights=st.integers(0, 2 * GiB),
       activations=st.integers(0, GiB), overhead=st.integers(0, GiB),
       as_float=st.booleans())
def test_budget_agrees(gpu: int, pct: int, weights: int, activations: int, overhead: int,
                       as_float: bool) -> None:
    util = pct / 100 if as_float else Fraction(pct, 100)
    assert kvm.usable_bytes(gpu, util) == mem.usable_memory(gpu, util)
    try:
        want = mem.kv_budget(gpu, util, weights, activations, overhead)
    except ValueError:
        with pytest.raises(ValueError, match="no memory left for the KV cache"):
            kvm.kv_budget_bytes(gpu, util, weights, activations, overhead)
        return
    assert kvm.kv_budget_bytes(gpu, util, weights, activations, overhead) == want


def test_opt13b_on_a_40gb_card() -> None:
    assert kvm.block_bytes(16, 40, 40, 128, 2) == 13_107_200
    budget = kvm.kv_budget_bytes(40 * GiB, 1, 26 * GiB, 3 * GiB, GiB)
    assert kvm.num_blocks_for_budget(budget, 16, 40, 40, 128, 2) == 819


def test_shapes_are_the_cache_contract() -> None:
    assert kvm.kv_cache_shape(7, 16, 3, 64) == (7, 2, 16, 3, 64)
    assert kvm.kv_scale_shape(7, 16, 3) == (7, 2, 16, 3)


@pytest.mark.parametrize("call, name", [
    (lambda: kvm.dtype_bytes("fp4"), "dtype"),
    (lambda: kvm.scale_bytes("int4"), "dtype"),
    (lambda: kvm.kv_cache_bytes(-1, 16, 1, 1, 1, 2), "num_blocks"),
    (lambda: kvm.kv_cache_bytes(1, 0, 1, 1, 1, 2), "block_size"),
    (lambda: kvm.kv_cache_bytes(1, 16, True, 1, 1, 2), "num_layers"),
    (lambda: kvm.token_bytes(1, 1, 1, 2, -4), "scale_bytes"),
    (lambda: kvm.num_blocks_for_budget(-1, 16, 1, 1, 1, 2), "budget_bytes"),
    (lambda: kvm.blocks_for_tokens(-1, 16), "num_tokens"),
    (lambda: kvm.usable_bytes(GiB, 1.5), "utilization"),
    (lambda: kvm.usable_bytes(GiB, "lots"), "utilization"),
    (lambda: kvm.kv_budget_bytes(GiB, 1, GiB + 1), "largest term: weights"),
])
def test_bad_arguments_name_themselves(call, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        call()
