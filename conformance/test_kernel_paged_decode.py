"""kernels.paged_decode (Triton) against the float64 oracle (reference.attention).

Every run writes into a NaN-poisoned `out=` and the caches come from
make_paged_kv (unused slots NaN, block tables random permutations), so a
kernel that skips an output element or reads a slot it does not own fails.
Tolerances: the table in conformance/kernel_support.py. Sizes: size_plan()
(CPU interpreter small, GPU full).
"""
from __future__ import annotations

from dataclasses import dataclass
from unittest import mock

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.kernel_support import (assert_close, assert_guard_intact, oracle_decode, poisoned_like,
                                        quantised_vs_bf16_rel, rotated, size_plan, tolerance)
from conformance.paged_cases import PagedKV, make_paged_kv, rel_error
from kernels import paged_decode
from kernels.decode_splits import MAX_SPLITS, MIN_SPLIT_TOKENS, auto_splits, choose_decode_config, decode_config

PLAN = size_plan()
BLOCK_SIZES = (8, 16, 32, 64)
HEAD_DIMS = (64, 80, 96, 128, 256)
HEAD_PAIRS = ((1, 1), (4, 4), (4, 2), (9, 3), (8, 2), (10, 2), (12, 2), (16, 2), (16, 1), (32, 8), (14, 2))
QUERY_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
CACHE_KINDS = ("auto", "int8", "fp8")


def cache_dtype(kind: str, query_dtype: torch.dtype) -> torch.dtype:
    return {"auto": query_dtype, "int8": torch.int8, "fp8": torch.float8_e4m3fn}[kind]


@dataclass
class Case:
    query: torch.Tensor
    kv: PagedKV
    scale: float


def make_case(seed: int, ctx: list[int], block_size: int, head_dim: int, num_heads: int, num_kv_heads: int,
              query_dtype: torch.dtype, kind: str, num_blocks: int | None = None) -> Case:
    """A random paged cache (unused slots NaN, tables random permutations) and queries."""
    gen = torch.Generator().manual_seed(seed)
    kv = make_paged_kv(gen, ctx, num_kv_heads, head_dim, block_size, cache_dtype(kind, query_dtype),
                       device=PLAN.device, num_blocks=num_blocks)
    query = torch.randn((len(ctx), num_heads, head_dim), generator=gen).to(query_dtype).to(PLAN.device)
    return Case(query, kv, head_dim ** -0.5)


def run_kernel(case: Case, num_splits: int | None = None) -> torch.Tensor:
    """paged_decode into a NaN-poisoned `out=`; returns that buffer."""
    out = poisoned_like(case.query)
    kv = case.kv
    ret = paged_decode(case.query, kv.kv_cache, kv.block_tables, kv.context_lens, case.scale, kv.kv_scales,
                       out=out, num_splits=num_splits)
    assert ret.data_ptr() == out.data_ptr() and ret.dtype == case.query.dtype
    assert_guard_intact(out, "paged_decode")
    return out


def run_decode(*args, num_splits: int | None = None, **kwargs) -> tuple[torch.Tensor, torch.Tensor, Case]:
    """make_case, the kernel and the oracle: (out, float64 reference, case)."""
    case = make_case(*args, **kwargs)
    return run_kernel(case, num_splits), oracle_decode(case.query, case.kv, case.scale), case


@st.composite
def context_lens(draw: st.DrawFn, block_size: int, num_seqs: int) -> list[int]:
    """1, block boundaries, block_size ± 1, long, anything in between. Only the
    first PLAN.long_seqs sequences go up to long_context (the oracle's cost)."""
    def one(top: int) -> st.SearchStrategy[int]:
        boundary = st.integers(1, max(1, top // block_size)).map(lambda k: k * block_size)
        return st.one_of(st.just(1), boundary, boundary.map(lambda b: b - 1 if b > 1 else 1),
                         boundary.map(lambda b: min(b + 1, top)), st.integers(top // 2, top), st.integers(1, top))
    return [draw(one(PLAN.long_context if i < PLAN.long_seqs else PLAN.short_context)) for i in range(num_seqs)]


@st.composite
def decode_cases(draw: st.DrawFn, query_dtype: torch.dtype, salt: int) -> dict:
    block_size = draw(st.sampled_from(rotated(BLOCK_SIZES, salt)))
    return dict(
        seed=draw(st.integers(0, 2**31 - 1)),
        ctx=draw(context_lens(block_size, draw(st.integers(1, PLAN.max_seqs)))),
        block_size=block_size,
        head_dim=draw(st.sampled_from(rotated(HEAD_DIMS, 2 * salt))),
        heads=draw(st.sampled_from(rotated(HEAD_PAIRS, 4 * salt))),
        query_dtype=query_dtype,
        kind=draw(st.sampled_from(rotated(CACHE_KINDS, salt))),
    )


@pytest.mark.parametrize("salt,query_dtype", list(enumerate(QUERY_DTYPES)), ids=str)
@settings(max_examples=max(4, PLAN.decode_examples // len(QUERY_DTYPES)))
@given(data=st.data())
def test_decode_matches_oracle(salt: int, query_dtype: torch.dtype, data: st.DataObject) -> None:
    """Random shapes, contexts and cache kinds against the float64 oracle, every
    query dtype (a variant each, so none is starved by Hypothesis' draw order)."""
    case = data.draw(decode_cases(query_dtype, salt), label="case")
    hq, hkv = case["heads"]
    out, ref, _ = run_decode(case["seed"], case["ctx"], case["block_size"], case["head_dim"], hq, hkv,
                             case["query_dtype"], case["kind"])
    assert_close(out, ref, tolerance(case["query_dtype"]), str(case))


# Shape corners, deterministic: every head dim, block size, dtype and cache kind,
# GQA ratios 1..16 incl. SmolLM2's 9/3, contexts 1, bs-1, bs, bs+1 and long.
CORNERS = [
    # head_dim, block_size, (Hq, Hkv), query dtype, cache kind
    (64, 16, (9, 3), torch.bfloat16, "auto"),
    (80, 8, (4, 4), torch.float16, "auto"),
    (96, 32, (16, 1), torch.float32, "auto"),
    (128, 64, (32, 8), torch.bfloat16, "int8"),
    (256, 16, (8, 2), torch.float16, "fp8"),
    (64, 8, (12, 1), torch.float32, "int8"),
    (128, 32, (6, 2), torch.bfloat16, "fp8"),
    (80, 64, (10, 5), torch.float32, "fp8"),
    (96, 16, (14, 2), torch.float16, "int8"),
    (256, 8, (2, 2), torch.bfloat16, "auto"),
]


@pytest.mark.parametrize("head_dim,block_size,heads,query_dtype,kind", CORNERS)
def test_decode_corners(head_dim: int, block_size: int, heads: tuple[int, int], query_dtype: torch.dtype,
                        kind: str) -> None:
    long = PLAN.long_context
    ctx = [1, block_size - 1, block_size, block_size + 1, long] if PLAN.device == "cpu" else \
        [1, block_size - 1, block_size, block_size + 1, 2 * block_size, long, long // 3]
    out, ref, _ = run_decode(head_dim * 7 + block_size, ctx, block_size, head_dim, *heads, query_dtype, kind)
    assert_close(out, ref, tolerance(query_dtype), f"{head_dim=} {block_size=} {heads=} {query_dtype} {kind}")


@pytest.mark.parametrize("query_dtype", [torch.float32, torch.bfloat16])
def test_split_k_counts_agree(query_dtype: torch.dtype) -> None:
    """Forced splits 1, 2, 7 and more splits than tokens (empty splits, a short
    sequence beside long ones) all match the oracle and each other."""
    long = 30 if PLAN.device == "cpu" else PLAN.long_context   # CPU: every extra program costs ~10 ms
    ctx = [1, long, 9, long // 2]
    first, ref, case = run_decode(11, ctx, 16, 64, 8, 2, query_dtype, "auto", num_splits=1)
    assert_close(first, ref, tolerance(query_dtype), "num_splits=1")
    for splits in (2, 7, long + 5):
        out = run_kernel(case, splits)
        assert_close(out, ref, tolerance(query_dtype), f"num_splits={splits}")
        assert rel_error(out, first) <= tolerance(query_dtype).rel, f"num_splits={splits} vs 1"


@pytest.mark.parametrize("num_splits", [1, 3, None])
@pytest.mark.parametrize("kind", ["auto", "fp8"])
def test_whole_and_partial_tiles(num_splits: int | None, kind: str) -> None:
    """16-token tiles over contexts that end on, before and after a tile edge:
    the unmasked whole-tile loop and the masked last tile must agree with the
    oracle, also when a forced split starts inside a tile."""
    ctx = [1, 15, 16, 17, 47, 48, 49, 100]
    case = make_case(23, ctx, 16, 64, 4, 2, torch.bfloat16, kind)
    out = poisoned_like(case.query)
    kv = case.kv
    paged_decode(case.query, kv.kv_cache, kv.block_tables, kv.context_lens, case.scale, kv.kv_scales, out=out,
                 num_splits=num_splits, block_n=16)
    assert_guard_intact(out, f"{num_splits=} {kind}")
    assert_close(out, oracle_decode(case.query, kv, case.scale), tolerance(torch.bfloat16),
                 f"{num_splits=} {kind}")


def test_splits_past_one_reduce_chunk_merge() -> None:
    """More splits than the reduce reads at once (MAX_SPLITS): the reduce takes
    several passes, and splits past the context are empty. One sequence, one KV
    head, so the interpreter's cost stays at ~150 programs."""
    ctx = [2 * MAX_SPLITS + 7]
    for splits in (MAX_SPLITS + 1, ctx[0], ctx[0] + 20):
        out, ref, _ = run_decode(5, ctx, 16, 64, 2, 1, torch.bfloat16, "auto", num_splits=splits)
        assert_close(out, ref, tolerance(torch.bfloat16), f"num_splits={splits}")


@pytest.mark.parametrize("num_splits", [1, 3, None])
def test_zero_context_rows_are_zero(num_splits: int | None) -> None:
    """context_len 0 is accepted and gives a zero row; its neighbours are unaffected."""
    out, ref, _ = run_decode(5, [0, 21, 0, 3], 8, 64, 4, 2, torch.float16, "int8", num_splits=num_splits)
    assert torch.equal(out[0].float().cpu(), torch.zeros_like(out[0].float().cpu()))
    assert torch.equal(out[2].float().cpu(), torch.zeros_like(out[2].float().cpu()))
    assert_close(out, ref, tolerance(torch.float16), "zero-context batch")


@pytest.mark.parametrize("kind", ["int8", "fp8"])
@pytest.mark.parametrize("seed", [0, 1])
def test_quantised_close_to_bf16_cache(kind: str, seed: int) -> None:
    """The quantisation error itself: a quantised cache decodes close to the
    float64 result of a bf16 cache holding the same K/V."""
    long = PLAN.long_context
    ctx = [long, long // 2 + 1, 7]
    out_q = run_kernel(make_case(seed, ctx, 16, 128, 8, 2, torch.bfloat16, kind))
    bf16 = make_case(seed, ctx, 16, 128, 8, 2, torch.bfloat16, "auto")
    ref_bf16 = oracle_decode(bf16.query, bf16.kv, bf16.scale)
    err = rel_error(out_q, ref_bf16)
    assert err <= quantised_vs_bf16_rel(cache_dtype(kind, torch.bfloat16)), f"{kind}: rel error {err:.3g}"


@pytest.mark.gpu
@pytest.mark.parametrize("num_splits", [1, None])
def test_huge_cache_int64_offsets(num_splits: int | None) -> None:
    """32,768 blocks of 64 tokens x 8 heads x 128 dims: a block is 2**17
    elements, so any block id >= 16,384 overflows an int32 offset."""
    out, ref, case = run_decode(3, [1000, 1500, 700, 1], 64, 128, 32, 8, torch.bfloat16, "int8",
                                num_splits=num_splits, num_blocks=32768)
    kv = case.kv
    used = max(int(kv.block_tables[i, :(c + 63) // 64].max()) for i, c in enumerate(kv.context_lens.tolist()))
    assert used * kv.kv_cache.stride(0) >= 2**31, "the case must reach past 32-bit offsets"
    assert_close(out, ref, tolerance(torch.bfloat16), "32,768-block cache")


@pytest.mark.parametrize("batch,kv_heads,ctx,want", [
    (64, 8, 4096, 1),     # 512 programs: ~4 waves on 132 SMs already, no reduce step
    (256, 32, 512, 1),
    (8, 8, 4096, 8),      # 64 programs -> 4 per SM, not past it
    (64, 3, 4096, 2),     # 192 programs: 3 splits would overshoot 528 (576)
    (1, 8, 16384, 64),    # capped at MAX_SPLITS
    (1, 8, 512, 4),       # capped so each split keeps >= 128 tokens
    (4, 8, 100, 1),       # too short to split
])
def test_auto_splits_on_h100(batch: int, kv_heads: int, ctx: int, want: int) -> None:
    assert auto_splits(batch * kv_heads, ctx, sms=132) == want


@pytest.mark.parametrize("batch, kv_heads, ctx, elem, head_dim, want", [
    (64, 8, 4096, 2, 128, (64, 4, 3, 1)),     # 3.9 programs per SM: the full tile, 3 stages
    (128, 8, 2048, 2, 128, (32, 2, 2, 1)),    # 7.8 per SM: half tiles
    (256, 32, 512, 2, 128, (32, 2, 2, 1)),    # 62 per SM: still half
    (256, 3, 4096, 2, 64, (64, 2, 2, 1)),     # 5.8 per SM at head_dim 64
    (256, 8, 1024, 1, 128, (64, 2, 3, 1)),    # 1-byte caches keep their launch
    (8, 8, 4096, 2, 128, (64, 4, 3, 8)),      # split grids keep the full tile
])
def test_decode_launch_on_h200(batch: int, kv_heads: int, ctx: int, elem: int, head_dim: int, want: tuple) -> None:
    """The launches kernels/decode_splits.py documents for a 132-SM GPU (H200 sweeps)."""
    cfg = decode_config(batch, kv_heads, head_dim, elem, ctx, 132)
    assert (cfg.block_n, cfg.num_warps, cfg.num_stages, cfg.num_splits) == want


@settings(max_examples=300)
@given(num_seqs=st.integers(0, 300), kv_heads=st.sampled_from([1, 3, 8, 32]), ctx=st.integers(0, 70000),
       head_dim=st.sampled_from(HEAD_DIMS), elem=st.sampled_from([1, 2, 4]), sms=st.sampled_from([16, 78, 132]),
       forced=st.one_of(st.none(), st.integers(1, 5000)))
def test_decode_config_covers_every_token(num_seqs: int, kv_heads: int, ctx: int, head_dim: int, elem: int,
                                          sms: int, forced: int | None) -> None:
    """The heuristic as it runs on a GPU of `sms` multiprocessors (not the
    interpreter's fixed 2 splits): splits cover the longest context, are whole
    tiles, never empty, at most MAX_SPLITS, each >= MIN_SPLIT_TOKENS long unless
    the context is shorter, and none at all once the grid already fills 2 waves."""
    with mock.patch("kernels.decode_splits.is_interpreting", return_value=False), \
            mock.patch("kernels.decode_splits.sm_count", return_value=sms):
        cfg = choose_decode_config(num_seqs, kv_heads, head_dim, elem, ctx, torch.device("cuda"), num_splits=forced)
    assert cfg.num_splits * cfg.split_len >= ctx and cfg.split_len >= 1
    if forced is not None:
        assert cfg.num_splits == forced
        return
    assert cfg.split_len % cfg.block_n == 0
    assert (cfg.num_splits - 1) * cfg.split_len < max(ctx, 1)                     # no empty split
    assert 1 <= cfg.num_splits <= min(MAX_SPLITS, auto_splits(num_seqs * kv_heads, max(ctx, 1), sms))
    assert cfg.split_len >= min(max(ctx, 1), MIN_SPLIT_TOKENS)
    if num_seqs * kv_heads >= 2 * sms:
        assert cfg.num_splits == 1


@pytest.mark.gpu
def test_pdl_reduce_waits_for_its_partials() -> None:
    """With PDL the reduce starts before the attention pass ends and waits in-kernel
    for the partials. Each call on a fresh query runs the PDL launch first, so a
    missing or misplaced wait would read the previous call's partials (the caching
    allocator hands back the same buffers); the plain launch must match it bitwise."""
    from kernels.pdl import use_pdl
    if not use_pdl(torch.device(PLAN.device), None):
        pytest.skip("programmatic dependent launch needs compiled Triton on sm_90+")
    case = make_case(11, [4096, 3000, 4100, 17, 2048, 4096, 1, 999], 16, 128, 32, 8, torch.bfloat16, "auto")
    kv, gen = case.kv, torch.Generator().manual_seed(12)
    for i in range(10):
        q = torch.randn(case.query.shape, generator=gen).to(case.query)
        with_pdl = paged_decode(q, kv.kv_cache, kv.block_tables, kv.context_lens, case.scale, num_splits=8, pdl=True,
                                split_reduce="kernel")
        plain = paged_decode(q, kv.kv_cache, kv.block_tables, kv.context_lens, case.scale, num_splits=8, pdl=False,
                             split_reduce="kernel")
        assert torch.equal(with_pdl, plain), f"call {i}: PDL launch differs from the plain one"
    assert_close(with_pdl, oracle_decode(q, kv, case.scale), tolerance(torch.bfloat16), "PDL vs oracle")
