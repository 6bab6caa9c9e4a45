"""The torch attention backend against the float64 oracle (reference.attention).

Hypothesis draws a step: decodes and prefill chunks with cached prefixes, GQA
ratios, block sizes, model and cache dtypes, shuffled block tables. The cache
starts as NaN everywhere but the cached prefixes, so a read of any slot outside
a context poisons the output. The cache after the step must equal the cache
before with exactly the step's rows written at the slots the test computes
itself from the block tables.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from engine.attention import get_attention_backend
from engine.attention.metadata import build_metadata
from reference.attention import attention, gather_paged_kv
from reference.quant import is_quantized, quantize_rows

TOL = {torch.float32: 2e-5, torch.bfloat16: 3e-2}


@st.composite
def steps(draw):
    num_decodes = draw(st.integers(0, 3))
    num_prefills = draw(st.integers(0 if num_decodes else 1, 3))
    seqs = []
    for i in range(num_decodes + num_prefills):
        ctx = draw(st.integers(1, 40))
        # a whole prompt (q == ctx) or a chunk after a cached prefix
        q = 1 if i < num_decodes else draw(st.one_of(st.just(ctx), st.integers(1, ctx)))
        seqs.append((q, ctx))
    return dict(
        seqs=seqs, num_decodes=num_decodes,
        block_size=draw(st.sampled_from([1, 4, 16])),
        group=draw(st.sampled_from([1, 3, 4])),
        num_kv_heads=draw(st.sampled_from([1, 2])),
        head_dim=draw(st.sampled_from([8, 16])),
        dtype=draw(st.sampled_from([torch.float32, torch.bfloat16])),
        cache_dtype=draw(st.sampled_from([None, None, torch.int8, torch.float8_e4m3fn])),
        strided=draw(st.booleans()),     # a non-contiguous cache view (the index_put path)
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def _slots(table: list[int], positions: range, block_size: int) -> list[int]:
    return [table[p // block_size] * block_size + p % block_size for p in positions]


def _setup(case: dict):
    g = torch.Generator().manual_seed(case["seed"])
    bs, hkv, d, dtype = case["block_size"], case["num_kv_heads"], case["head_dim"], case["dtype"]
    hq = hkv * case["group"]
    cache_dtype = case["cache_dtype"] or dtype
    need = [-(-ctx // bs) for _, ctx in case["seqs"]]
    num_blocks = sum(need) + 2                         # spare blocks stay NaN
    order = torch.randperm(num_blocks, generator=g).tolist()
    tables, at = [], 0
    for n in need:
        tables.append(order[at:at + n])
        at += n
    # Full per-sequence K/V in the model dtype: the prefix goes into the cache now,
    # the last q rows are this step's new rows.
    full_k = [torch.randn(ctx, hkv, d, generator=g).to(dtype) for _, ctx in case["seqs"]]
    full_v = [torch.randn(ctx, hkv, d, generator=g).to(dtype) for _, ctx in case["seqs"]]
    quant = is_quantized(cache_dtype)
    width = 2 * d if case["strided"] else d
    cache = torch.full((num_blocks, 2, bs, hkv, width), float("nan"), dtype=dtype).to(cache_dtype) \
        if not quant else torch.zeros((num_blocks, 2, bs, hkv, width), dtype=cache_dtype)
    cache = cache[..., :d]
    scales = torch.full((num_blocks, 2, bs, hkv), float("nan")) if quant else None
    for (q, ctx), table, k, v in zip(case["seqs"], tables, full_k, full_v):
        for which, rows in ((0, k), (1, v)):
            for slot, row in zip(_slots(table, range(ctx - q), bs), rows[:ctx - q]):
                b, o = divmod(slot, bs)
                if quant:
                    qrow, srow = quantize_rows(row, cache_dtype)
                    cache[b, which, o], scales[b, which, o] = qrow, srow
                else:
                    cache[b, which, o] = row
    query = torch.randn(sum(q for q, _ in case["seqs"]), hq, d, generator=g).to(dtype)
    key = torch.cat([k[ctx - q:] for (q, ctx), k in zip(case["seqs"], full_k)])
    value = torch.cat([v[ctx - q:] for (q, ctx), v in zip(case["seqs"], full_v)])
    meta = build_metadata(tables, [q for q, _ in case["seqs"]], [c for _, c in case["seqs"]],
                          case["num_decodes"], bs, num_blocks, "cpu")
    return query, key, value, cache, scales, tables, full_k, full_v, meta


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.uint8)


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float(((out.double() - ref).abs().amax() / ref.abs().amax().clamp_min(1e-6)))


@given(steps())
def test_torch_backend_matches_oracle_and_writes_only_new_slots(case):
    query, key, value, cache, scales, tables, full_k, full_v, meta = _setup(case)
    bs, cache_dtype = case["block_size"], cache.dtype
    quant = is_quantized(cache_dtype)
    expected_cache = cache.clone()
    expected_scales = scales.clone() if quant else None
    row = 0
    for (q, ctx), table in zip(case["seqs"], tables):
        for slot, t in zip(_slots(table, range(ctx - q, ctx), bs), range(row, row + q)):
            b, o = divmod(slot, bs)
            for which, rows in ((0, key), (1, value)):
                if quant:
                    qrow, srow = quantize_rows(rows[t], cache_dtype)
                    expected_cache[b, which, o], expected_scales[b, which, o] = qrow, srow
                else:
                    expected_cache[b, which, o] = rows[t]
        row += q
    scale = case["head_dim"] ** -0.5

    out = get_attention_backend("torch").forward(query, key, value, cache, scales, meta, scale)

    assert out.dtype == query.dtype and out.shape == query.shape
    assert torch.equal(_bits(cache), _bits(expected_cache)), "cache differs from the expected writes"
    if quant:
        assert torch.equal(_bits(scales), _bits(expected_scales)), "scales differ from the expected writes"
    row = 0
    for i, ((q, ctx), table) in enumerate(zip(case["seqs"], tables)):
        if quant:      # the oracle reads the dequantised cache the step left behind
            k, v = gather_paged_kv(cache, table, ctx, scales)
        else:
            k, v = full_k[i], full_v[i]
        ref = attention(query[row:row + q], k, v, scale, causal=True)
        err = _rel_err(out[row:row + q], ref)
        assert err <= TOL[case["dtype"]], f"sequence {i} (q={q}, ctx={ctx}): relative error {err}"
        row += q


def test_skipped_slot_leaves_the_cache_alone():
    """A token whose slot is -1 is not written; attention still reads the cache."""
    g = torch.Generator().manual_seed(3)
    bs, hkv, d, ctx = 4, 2, 8, 6
    cache = torch.randn(3, 2, bs, hkv, d, generator=g)
    meta = build_metadata([[2, 0]], [1], [ctx], 1, bs, 3, "cpu")
    meta = dataclasses.replace(meta, slot_mapping=torch.tensor([-1]))
    before = cache.clone()
    query = torch.randn(1, 4, d, generator=g)
    key, value = torch.randn(1, hkv, d, generator=g), torch.randn(1, hkv, d, generator=g)
    out = get_attention_backend("torch").forward(query, key, value, cache, None, meta, 0.3)
    assert torch.equal(cache, before)
    k, v = gather_paged_kv(before, [2, 0], ctx)
    assert _rel_err(out, attention(query, k, v, 0.3)) < 1e-5


def test_bad_arguments_raise_value_error():
    backend = get_attention_backend("torch")
    meta = build_metadata([[0]], [1], [1], 1, 4, 1, "cpu")
    q, kv = torch.zeros(1, 3, 8), torch.zeros(1, 2, 8)
    with pytest.raises(ValueError, match="multiple"):
        backend.forward(q, kv, kv, torch.zeros(1, 2, 4, 2, 8), None, meta, 1.0)
    with pytest.raises(ValueError, match="kv_scales"):
        backend.forward(torch.zeros(1, 2, 8), kv, kv, torch.zeros(1, 2, 4, 2, 8, dtype=torch.int8),
                        None, meta, 1.0)
