"""kernels.copy_blocks and kernels.swap_blocks against plain tensor indexing.

Exact (bitwise) equality: copied rows equal their sources, every other row is
unchanged, NaN payloads and fp8/int8 bytes included. On CPU copy_blocks runs
through the Triton interpreter and swap_blocks does CPU -> CPU; with CUDA the
same tests use the GPU and swap GPU <-> CPU.
"""
from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kernels.copy_blocks import copy_blocks
from kernels.swap_blocks import swap_blocks

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.int8)


def random_cache(gen: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype,
                 device: str = DEVICE) -> torch.Tensor:
    """Random values with some NaNs (float dtypes), so a bitwise copy is required."""
    if dtype == torch.int8:
        return torch.randint(-128, 128, shape, generator=gen, dtype=torch.int8).to(device)
    x = torch.randn(shape, generator=gen) * 3
    x[torch.rand(shape, generator=gen) < 0.05] = float("nan")
    return x.to(dtype).to(device)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view({1: torch.uint8, 2: torch.int16, 4: torch.int32}[t.element_size()]).cpu()


@st.composite
def copy_cases(draw: st.DrawFn) -> tuple[int, int, list[tuple[int, int]]]:
    num_blocks = draw(st.integers(2, 24))
    ids = draw(st.permutations(range(num_blocks)))
    n_dst = draw(st.integers(1, num_blocks // 2))
    dsts = ids[:n_dst]
    srcs = ids[n_dst:]
    pairs = [(draw(st.sampled_from(srcs)), d) for d in dsts]   # sources may repeat (CoW fan-out)
    return draw(st.integers(0, 2**31 - 1)), num_blocks, pairs


@given(copy_cases(), st.sampled_from(DTYPES), st.sampled_from([8, 16]), st.booleans())
def test_copy_blocks_matches_indexing(case: tuple, dtype: torch.dtype, block_size: int,
                                      engine_wide: bool) -> None:
    seed, num_blocks, pairs = case
    gen = torch.Generator().manual_seed(seed)
    layers, hkv, d = 3, 2, 24
    shape = (num_blocks, 2, block_size, hkv, d)
    if engine_wide:   # per-layer views of one buffer: one launch for all layers
        whole = random_cache(gen, (layers,) + shape, dtype)
        caches = [whole[i] for i in range(layers)]
    else:
        caches = [random_cache(gen, shape, dtype) for _ in range(layers)]
    scales = random_cache(gen, shape[:4], torch.float32)
    tensors = caches + [scales]
    before = [bits(t).clone() for t in tensors]
    src_to_dst = torch.tensor(pairs, dtype=torch.int64)
    copy_blocks(tensors, src_to_dst)
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    for old, t in zip(before, tensors):
        expected = old.clone()
        expected[src_to_dst[:, 1]] = old[src_to_dst[:, 0]]
        assert torch.equal(bits(t), expected)


def _copy_into_one_cache(mapping: object) -> tuple[torch.Tensor, ...]:
    cache = torch.zeros((8, 2, 4, 1, 16), device=DEVICE)
    copy_blocks([cache], mapping)
    return (cache,)


def _swap_between_two(mapping: object) -> tuple[torch.Tensor, ...]:
    src, dst = torch.ones((8, 2, 8), dtype=torch.float16), torch.zeros((8, 2, 8), dtype=torch.float16)
    swap_blocks(src, dst, mapping)
    return (dst,)


# The mapping checks copy_blocks and swap_blocks share (kernels.validation.check_block_mapping):
# the same problem, the same message, naming each launcher's argument and block owners.
MAPPERS = {"copy_blocks": (_copy_into_one_cache, "src_to_dst", "the caches", "the caches"),
           "swap_blocks": (_swap_between_two, "mapping", "src", "dst")}
MAPPING_BAD = [
    ("not a tensor", [[0, 1]], "{name} must be a torch.Tensor, got list"),
    ("int32", torch.tensor([[0, 1]], dtype=torch.int32), r"{name} must be int64 \[n, 2\], got torch.int32"),
    ("1-D", torch.zeros(3, dtype=torch.int64), r"{name} must be int64 \[n, 2\], got torch.int64 \(3,\)"),
    ("source too big", torch.tensor([[8, 1]]), "{name} source block 8 outside the 8 blocks of {src}"),
    ("source negative", torch.tensor([[-1, 2]]), "{name} source block -1 outside the 8 blocks of {src}"),
    ("destination too big", torch.tensor([[0, 9]]), "{name} destination block 9 outside the 8 blocks of {dst}"),
    ("destination twice", torch.tensor([[1, 2], [3, 2]]), "{name} names destination block 2 twice"),
]


@pytest.mark.parametrize("launcher", list(MAPPERS))
@pytest.mark.parametrize("what, mapping, message", MAPPING_BAD, ids=[b[0] for b in MAPPING_BAD])
def test_block_movers_reject_bad_mappings(launcher: str, what: str, mapping: object, message: str) -> None:
    run, name, src, dst = MAPPERS[launcher]
    with pytest.raises(ValueError, match=message.format(name=re.escape(name), src=re.escape(src),
                                                        dst=re.escape(dst))):
        run(mapping)


@pytest.mark.parametrize("bad", [[(1, 1)], [(1, 2), (2, 3)]])
def test_copy_blocks_rejects_a_destination_that_is_a_source(bad: list) -> None:
    """Copies inside one cache must be order-free: no destination is also a source."""
    cache = torch.zeros((8, 2, 4, 1, 16), device=DEVICE)
    before = cache.clone()
    with pytest.raises(ValueError, match="src_to_dst: destination block [12] is also a source in this call"):
        copy_blocks([cache], torch.tensor(bad, dtype=torch.int64))
    assert torch.equal(cache, before)


def test_copy_blocks_rejects_bad_arguments() -> None:
    a = torch.zeros((8, 2, 4, 1, 16), device=DEVICE)
    ok = torch.tensor([[0, 1]], dtype=torch.int64)
    with pytest.raises(ValueError, match=r"kv_caches\[1\] has 4 blocks"):
        copy_blocks([a, a[:4]], ok)
    with pytest.raises(ValueError, match="contiguous"):
        copy_blocks([a.transpose(1, 2)], ok)
    with pytest.raises(ValueError, match="list of tensors"):
        copy_blocks(a, ok)
    if DEVICE == "cuda":
        with pytest.raises(ValueError, match=r"kv_caches\[1\] is on cpu"):
            copy_blocks([a, a.cpu()], ok)


def test_copy_blocks_rejects_cpu_without_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    """copy_blocks is a Triton kernel: CPU caches outside the interpreter are a device error."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    cache = torch.zeros((8, 2, 4, 1, 16))
    with pytest.raises(ValueError, match=r"kv_caches\[0\] is on cpu; copy_blocks needs a CUDA device"):
        copy_blocks([cache], torch.tensor([[0, 1]], dtype=torch.int64))
    assert not cache.any()


def _swap_devices() -> list[tuple[str, str]]:
    if DEVICE == "cuda":
        return [("cuda", "cpu"), ("cpu", "cuda")]
    return [("cpu", "cpu")]


@pytest.mark.parametrize("src_dev, dst_dev", _swap_devices())
@given(st.integers(0, 2**31 - 1), st.integers(1, 12), st.integers(1, 12), st.sampled_from(DTYPES),
       st.data())
def test_swap_blocks_matches_indexing(src_dev: str, dst_dev: str, seed: int, n_src: int, n_dst: int,
                                      dtype: torch.dtype, data: st.DataObject) -> None:
    gen = torch.Generator().manual_seed(seed)
    shape = (2, 8, 2, 16)
    src = random_cache(gen, (n_src,) + shape, dtype, src_dev)
    dst = random_cache(gen, (n_dst,) + shape, dtype, dst_dev)
    n = data.draw(st.integers(0, n_dst))
    dst_ids = data.draw(st.permutations(range(n_dst)))[:n]
    src_ids = [data.draw(st.integers(0, n_src - 1)) for _ in range(n)]
    mapping = torch.tensor([[s, d] for s, d in zip(src_ids, dst_ids)], dtype=torch.int64).reshape(n, 2)
    src_before, expected = bits(src).clone(), bits(dst).clone()
    expected[mapping[:, 1]] = src_before[mapping[:, 0]]
    swap_blocks(src, dst, mapping)        # blocking: complete on return
    assert torch.equal(bits(dst), expected)
    assert torch.equal(bits(src), src_before)


def test_swap_blocks_rejects_bad_arguments() -> None:
    src = torch.zeros((4, 2, 8), dtype=torch.float16)
    dst = torch.zeros((6, 2, 8), dtype=torch.float16)
    ok = torch.tensor([[0, 1]], dtype=torch.int64)
    cases = [
        ((src, dst.float(), ok), "dst dtype"),
        ((src, torch.zeros((6, 2, 4), dtype=torch.float16), ok), "dst shape"),
        ((src, dst, torch.tensor([[4, 0]])), "mapping source block 4 outside the 4 blocks of src"),
        ((src, dst, torch.tensor([[0, 6]])), "mapping destination block 6 outside the 6 blocks of dst"),
        ((src.numpy(), dst, ok), "src must be a torch.Tensor"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            swap_blocks(*args)
    assert not dst.any()
