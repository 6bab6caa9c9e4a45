"""The benchmark peers and problem builders on CPU at tiny sizes, against the float64
oracle: a peer that computes something else would make every ratio meaningless.

FlexAttention runs eagerly here (the math path, which applies mask_mod to every
position), so these tests check the BlockMask's mask_mod and the cache views;
the GPU benchmark checks the compiled peer against gather + SDPA before timing.
"""
from __future__ import annotations

import pytest
import torch

from bench.peers import flex_decode_fn, flex_kernel_kind, flex_kv_views, gather_kv, gather_sdpa_decode
from bench.problems import decode_problem, prefill_problem, write_problem
from conformance.paged_cases import make_paged_kv, rel_error
from reference.attention import paged_decode

LENS = [1, 16, 17, 40]  # one token, a full block, block + 1, several blocks


def _finite(kv_cache: torch.Tensor) -> torch.Tensor:
    """Unused slots are NaN-poisoned; masked-out V still meets 0 * NaN in dense math."""
    return kv_cache.float().nan_to_num().to(kv_cache.dtype)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("page_size", [None, 32])
def test_flex_peer_matches_oracle(page_size) -> None:
    gen = torch.Generator().manual_seed(3)
    kv = make_paged_kv(gen, LENS, 2, 16, 8, torch.float32)
    q = torch.randn((len(LENS), 6, 16), generator=gen)
    ref = paged_decode(q, kv.kv_cache, kv.block_tables, kv.context_lens, 0.25)
    out = flex_decode_fn(q, _finite(kv.kv_cache), kv.block_tables, kv.context_lens, 0.25, max(LENS),
                         page_size=page_size)()
    assert out.shape == q.shape
    assert rel_error(out, ref) < 1e-5


def test_flex_views_share_the_cache() -> None:
    cache = torch.randn((5, 2, 4, 3, 8))
    k, v = flex_kv_views(cache)
    assert k.data_ptr() == cache.data_ptr()
    assert torch.equal(k[0, :, 2 * 4 * 3 + 1], cache[3, 0, 1])   # K of block 3 is flex block 6
    assert torch.equal(v[0, :, 2 * 4 * 3 + 1], cache[3, 1, 1])
    with pytest.raises(ValueError, match="int8"):
        flex_decode_fn(torch.zeros((1, 3, 8)), cache.to(torch.int8), torch.zeros((1, 1), dtype=torch.int32),
                       torch.ones(1, dtype=torch.int32), 1.0, 1)


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.int8, torch.float8_e4m3fn])
def test_gather_peer_matches_oracle(cache_dtype) -> None:
    gen = torch.Generator().manual_seed(4)
    kv = make_paged_kv(gen, LENS + [33], 3, 32, 16, cache_dtype)
    q = torch.randn((len(LENS) + 1, 9, 32), generator=gen)   # SmolLM2's 9/3 grouping
    ref = paged_decode(q, kv.kv_cache, kv.block_tables, kv.context_lens, 0.2, kv.kv_scales)
    scales = None if kv.kv_scales is None else kv.kv_scales.nan_to_num()
    out = gather_sdpa_decode(q, _finite(kv.kv_cache), kv.block_tables, kv.context_lens, 0.2, 40, scales)
    assert rel_error(out, ref) < 1e-5


def test_decode_problem_is_what_the_oracle_sees() -> None:
    p = decode_problem(3, 40, 4, 2, 16, torch.float32, torch.float32, device="cpu", seed=1)
    assert sorted(p.block_tables.flatten().tolist()) == list(range(p.kv_cache.shape[0]))  # a permutation
    ref = paged_decode(p.query, p.kv_cache, p.block_tables, p.context_lens, p.scale)
    out = gather_sdpa_decode(p.query, p.kv_cache, p.block_tables, p.context_lens, p.scale, p.context, uniform=True)
    assert rel_error(out, ref) < 1e-5
    # 3 seqs x 40 tokens x K+V x 2 heads x 16 x 4 B, + table 3x3 + lens 3 int32, + q and out 3x4x16 fp32
    assert p.bytes_moved() == 3 * 40 * 2 * 2 * 16 * 4 + 9 * 4 + 3 * 4 + 2 * 3 * 4 * 16 * 4
    q8 = decode_problem(2, 20, 4, 2, 16, torch.int8, torch.float32, device="cpu", seed=2)
    ref8 = paged_decode(q8.query, q8.kv_cache, q8.block_tables, q8.context_lens, q8.scale, q8.kv_scales)
    out8 = gather_sdpa_decode(q8.query, q8.kv_cache, q8.block_tables, q8.context_lens, q8.scale, 20, q8.kv_scales)
    assert rel_error(out8, ref8) < 1e-5


def test_prefill_problem_pages_hold_the_unpaged_tensors() -> None:
    p = prefill_problem(2, 40, 4, 2, 16, torch.float32, device="cpu", seed=5)
    k, v = gather_kv(p.kv_cache, p.block_tables, 40, None, torch.float32)
    assert torch.equal(k, p.k) and torch.equal(v, p.v)
    assert torch.equal(p.query.view(2, 40, 4, 16).transpose(1, 2), p.q)
    assert p.query_start_loc.tolist() == [0, 40, 80] and p.causal_flops() == 2 * 2 * 2 * 4 * 40 * 40 * 16 / 2


def test_write_problem_slots() -> None:
    p = write_problem(40, 2, 16, torch.float8_e4m3fn, torch.float32, device="cpu", seed=6)
    slots = p.slot_mapping.tolist()
    assert len(set(slots)) == 40 and all(0 <= s < p.kv_cache.shape[0] * 16 for s in slots)
    assert all(b - a == 1 for i, (a, b) in enumerate(zip(slots, slots[1:])) if (i + 1) % 16)  # in order in a block
    assert p.bytes_moved() == 2 * 40 * 2 * 16 * 4 + 40 * 8 + 2 * 40 * 2 * 16 * 1 + 2 * 40 * 2 * 4


def test_flex_kernel_kind_follows_inductors_rule() -> None:
    """Inductor's flex decoding kernel needs Hq / Hkv to be a power of two (torch's
    _use_flex_decoding); the JSON records which kernel a ratio was measured against."""
    assert flex_kernel_kind(32, 8) == flex_kernel_kind(32, 32) == flex_kernel_kind(16, 1) == "flex decoding"
    assert flex_kernel_kind(9, 3).startswith("flex general (GQA ratio 3")
    assert flex_kernel_kind(12, 2).startswith("flex general (GQA ratio 6")


def test_flex_peer_keeps_batch_static_across_batches() -> None:
    """Compiled once for several batch sizes, flex must see a static batch each time
    (a symbolic batch sends inductor to flex's general kernel)."""
    seen = []

    def backend(gm, example_inputs):
        seen.append(next(t.shape for t in example_inputs if isinstance(t, torch.Tensor) and t.dim() == 4))
        return gm.forward
    from torch.nn.attention.flex_attention import flex_attention
    attend = torch.compile(flex_attention, fullgraph=True, backend=backend)
    for batch, context in [(1, 64), (1, 200), (3, 64), (5, 130)]:
        p = decode_problem(batch, context, 8, 2, 16, device="cpu")
        flex_decode_fn(p.query, p.kv_cache, p.block_tables, p.context_lens, p.scale, p.context, page_size=128,
                       attend=attend)()
    assert seen and all(isinstance(s[0], int) for s in seen), seen
    assert {s[0] for s in seen} == {1, 3, 5}
