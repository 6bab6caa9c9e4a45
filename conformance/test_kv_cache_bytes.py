"""The KV cache the engine allocates holds exactly the bytes reference.memory's
closed form gives for its shape (caches and, for int8/fp8, their scales), and the
runner's cache sizing agrees with the oracle's blocks-in-budget."""
from __future__ import annotations

import pytest
import torch

from engine.model_executor.kv_cache import CacheShape, KVCache
from engine.model_executor.model_loader import device_kv_blocks
from reference import memory as mem

CASES = [(2, 16, 3, 64, torch.float32, "float32"), (30, 16, 3, 64, torch.bfloat16, "bfloat16"),
         (4, 8, 8, 128, torch.float16, "float16"), (3, 4, 2, 80, torch.int8, "int8"),
         (2, 32, 1, 16, torch.float8_e4m3fn, "fp8")]


@pytest.mark.parametrize("layers, block_size, heads, head_dim, dtype, name", CASES)
def test_allocated_bytes_equal_the_closed_form(layers, block_size, heads, head_dim, dtype, name):
    shape = CacheShape(layers, block_size, heads, head_dim, dtype)
    cache = KVCache(shape, num_blocks=7, num_cpu_blocks=3, device=torch.device("cpu"))
    token = mem.bytes_per_token(layers, heads, head_dim, mem.dtype_bytes(name),
                                mem.scale_bytes_per_head_for(name))
    block = mem.bytes_per_block(token, block_size)
    assert cache.device_bytes == 7 * block
    assert shape.bytes_per_block == block
    cpu = cache.cpu_caches + (cache.cpu_scales or [])
    assert sum(t.numel() * t.element_size() for t in cpu) == 3 * block


@pytest.mark.parametrize("budget, utilization", [(1 << 30, 0.9), (123_456_789, 0.5), (10 << 20, 1.0)])
def test_cpu_sizing_matches_the_oracle(budget, utilization):
    shape = CacheShape(30, 16, 3, 64, torch.float32)
    token = mem.bytes_per_token(30, 3, 64, 4)
    expected = mem.num_blocks_in_budget(int(budget * utilization), mem.bytes_per_block(token, 16))
    assert device_kv_blocks(shape, torch.device("cpu"), utilization, budget) == expected


def test_no_room_for_a_block_is_a_clear_error():
    shape = CacheShape(30, 16, 3, 64, torch.float32)
    with pytest.raises(ValueError, match="no room for a single KV block"):
        device_kv_blocks(shape, torch.device("cpu"), 0.5, 1000)
