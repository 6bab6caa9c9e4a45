"""engine/attention/triton_backend.py against the float64 oracle reference.attention.

A step is built as the runner builds it (`build_metadata`: decodes first, then
prefill chunks over a cached prefix), the prefix K/V already in a poisoned cache
(NaN everywhere no sequence owns), the step's new K/V rows handed to the backend.
The oracle attends over each sequence's K/V as drawn (dequantised through
reference.quant for fp8/int8 caches), never over what the backend wrote. After
the call, the new rows must sit in their slots and the prefix must be untouched.
Tolerances: conformance/kernel_support.py (`tolerance`, by query dtype; the
interpreter's are tighter). On a GPU the same tests run compiled at larger sizes.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import engine.attention.triton_backend as triton_backend
from conformance.kernel_support import assert_close, rotated, tolerance
from conformance.paged_cases import poisoned_cache
from engine.attention import get_attention_backend
from engine.attention.metadata import AttentionMetadata, build_metadata
from reference.attention import attention as oracle_attention
from reference.quant import dequantize_rows, is_quantized, quantize_rows

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# The interpreter pays ~1 ms per tile op: on CPU a few short sequences, few examples.
MAX_CONTEXT = 260 if DEVICE == "cuda" else 24
MAX_SEQS = 6 if DEVICE == "cuda" else 3
HEADS = ((2, 1), (4, 2), (3, 3))               # (query heads, KV heads)
HEAD_DIMS = (16, 32) if DEVICE == "cpu" else (64, 128)
BLOCK_SIZES = (4, 8, 16)
VARIANTS = [(torch.float32, None), (torch.float16, None), (torch.bfloat16, None),
            (torch.float16, torch.float8_e4m3fn), (torch.float32, torch.int8)]
KINDS = ["decode", "prefill", "mixed"]
# A tenth of the profile's examples on CPU (ci: 3 per variant, 45 in all; nightly: 100),
# a quarter on a GPU (gpu: 5 per variant), where the float64 oracle's loops set the cost.
EXAMPLES = settings.default.max_examples // (10 if DEVICE == "cpu" else 4) or 1


@dataclass
class Step:
    metadata: AttentionMetadata
    query: torch.Tensor            # [T, Hq, D]
    key: torch.Tensor              # [T, Hkv, D]: the new rows, in the step's token order
    value: torch.Tensor
    kv_cache: torch.Tensor
    kv_scales: torch.Tensor | None
    kv: list[torch.Tensor]         # per sequence, [2, context, Hkv, D] in the model dtype
    scale: float


def make_step(gen: torch.Generator, decode_ctx: list[int], prefills: list[tuple[int, int]], heads: tuple[int, int],
              head_dim: int, block_size: int, dtype: torch.dtype, cache_dtype: torch.dtype | None) -> Step:
    """Decodes of the given contexts, then prefill chunks of (cached prefix, new tokens)."""
    query_lens = [1] * len(decode_ctx) + [q for _, q in prefills]
    contexts = list(decode_ctx) + [p + q for p, q in prefills]
    num_heads, num_kv_heads = heads
    blocks = [-(-c // block_size) for c in contexts]
    num_blocks = sum(blocks) + 2
    cache, scales = poisoned_cache(num_blocks, block_size, num_kv_heads, head_dim, cache_dtype or dtype, DEVICE)
    order = torch.randperm(num_blocks, generator=gen).tolist()
    tables, kv, new_k, new_v = [], [], [], []
    for ctx, q, nb in zip(contexts, query_lens, blocks):
        table, order = order[:nb], order[nb:]
        tables.append(table + [order[0]])          # a padding column pointing at a poisoned block
        seq_kv = torch.randn((2, ctx, num_kv_heads, head_dim), generator=gen).to(dtype)
        kv.append(seq_kv)
        # The cached prefix, written here by plain indexing, not by the backend.
        t = torch.arange(ctx - q)
        b, off = torch.tensor(table, dtype=torch.long)[t // block_size].to(DEVICE), (t % block_size).to(DEVICE)
        prefix = seq_kv[:, :ctx - q].transpose(0, 1)                    # [prefix, 2, Hkv, D]
        if cache_dtype is None:
            cache[b, :, off] = prefix.to(DEVICE)
        else:
            values, row_scales = quantize_rows(prefix, cache_dtype)
            raw = cache.view(torch.uint8)                              # not every build indexes fp8 on CUDA
            raw[b, :, off] = values.view(torch.uint8).to(DEVICE)
            scales[b, :, off] = row_scales.to(DEVICE)
        new_k.append(seq_kv[0, ctx - q:])
        new_v.append(seq_kv[1, ctx - q:])
    metadata = build_metadata(tables, query_lens, contexts, len(decode_ctx), block_size, num_blocks, DEVICE)
    query = torch.randn((sum(query_lens), num_heads, head_dim), generator=gen).to(dtype)
    return Step(metadata, query.to(DEVICE), torch.cat(new_k).to(DEVICE), torch.cat(new_v).to(DEVICE),
                cache, scales, kv, head_dim ** -0.5)


def oracle(step: Step, cache_dtype: torch.dtype | None) -> torch.Tensor:
    out = torch.empty(step.query.shape, dtype=torch.float64)
    starts = step.metadata.query_start_loc.tolist()
    for i, seq_kv in enumerate(step.kv):
        if cache_dtype is None:
            k, v = seq_kv[0].double(), seq_kv[1].double()
        else:
            k, v = (dequantize_rows(*quantize_rows(x, cache_dtype)) for x in seq_kv)
        lo, hi = starts[i], starts[i + 1]
        out[lo:hi] = oracle_attention(step.query[lo:hi].cpu(), k, v, step.scale)
    return out


def assert_cache_after_step(step: Step, before: torch.Tensor, cache_dtype: torch.dtype | None) -> None:
    """New rows in their slots (exactly, or within the quantisation step), all else untouched."""
    bs = step.kv_cache.shape[2]
    slots = step.metadata.slot_mapping.cpu()
    blocks, offsets = slots // bs, slots % bs
    raw = step.kv_cache.view(torch.uint8) if step.kv_cache.element_size() == 1 else step.kv_cache
    got = raw[blocks.to(DEVICE), :, offsets.to(DEVICE)].cpu().view(step.kv_cache.dtype)   # [T, 2, Hkv, D]
    want = torch.stack([step.key.cpu(), step.value.cpu()], dim=1)
    if cache_dtype is None:
        assert torch.equal(got, want), "new K/V rows are not in their slots"
    else:
        _, want_scales = quantize_rows(want, cache_dtype)
        got_scales = step.kv_scales[blocks.to(DEVICE), :, offsets.to(DEVICE)].cpu()
        assert torch.equal(got_scales, want_scales), "per-token scales of the new rows"
        deq, x = dequantize_rows(got, got_scales), want.double()
        # Half a step of the grid: int8 scale / 2; e4m3 2^-4 relative (3 mantissa bits) or its
        # subnormal step 2^-9 x scale. Plus 1e-4 x scale: the float32 scale's own rounding,
        # times |q| up to 127 (448), moves q x scale by up to ~1e-5 x scale.
        s64 = got_scales.double().unsqueeze(-1)
        if cache_dtype == torch.int8:
            bound = 0.5 * s64
        else:
            bound = 2.0 ** -4 * x.abs() + 2.0 ** -9 * s64
        assert bool(((deq - x).abs() <= bound + 1e-4 * s64).all()), "quantised new rows are not in their slots"
    # Everything else as before the step (the poison and the prefix).
    mask = torch.ones(step.kv_cache.shape[:3], dtype=torch.bool)
    mask[blocks, :, offsets] = False
    now = raw.cpu()[mask]
    old = (before.view(torch.uint8) if before.element_size() == 1 else before)[mask]
    assert torch.equal(now.view(torch.uint8), old.view(torch.uint8)), "the backend wrote outside the new slots"


def run_case(gen, decode_ctx, prefills, heads, head_dim, block_size, dtype, cache_dtype) -> None:
    step = make_step(gen, decode_ctx, prefills, heads, head_dim, block_size, dtype, cache_dtype)
    before = step.kv_cache.cpu().clone()
    backend = get_attention_backend("triton")
    out = backend.forward(step.query, step.key, step.value, step.kv_cache, step.kv_scales, step.metadata,
                          step.scale)
    assert out.shape == step.query.shape and out.dtype == dtype
    assert_close(out, oracle(step, cache_dtype), tolerance(dtype),
                 f"{len(decode_ctx)} decodes + {len(prefills)} prefills, {dtype}, cache {cache_dtype}")
    assert_cache_after_step(step, before, cache_dtype)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype,cache_dtype", VARIANTS, ids=lambda v: str(v).removeprefix("torch."))
@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_triton_backend_matches_the_oracle(kind, dtype, cache_dtype, data):
    salt = VARIANTS.index((dtype, cache_dtype)) * len(KINDS) + KINDS.index(kind)
    seed = data.draw(st.integers(0, 2**31 - 1), label="seed")
    heads = data.draw(st.sampled_from(rotated(HEADS, salt)), label="heads")
    head_dim = data.draw(st.sampled_from(rotated(HEAD_DIMS, salt)), label="head_dim")
    block_size = data.draw(st.sampled_from(rotated(BLOCK_SIZES, salt)), label="block_size")
    n_dec = 0 if kind == "prefill" else data.draw(st.integers(1, MAX_SEQS), label="decodes")
    n_pre = 0 if kind == "decode" else data.draw(st.integers(1, max(1, MAX_SEQS - n_dec)), label="prefills")
    decode_ctx = data.draw(st.lists(st.integers(1, MAX_CONTEXT), min_size=n_dec, max_size=n_dec), label="ctx")
    prefills = data.draw(st.lists(st.tuples(st.integers(0, MAX_CONTEXT // 2), st.integers(1, MAX_CONTEXT // 2)),
                                  min_size=n_pre, max_size=n_pre), label="prefills")
    run_case(torch.Generator().manual_seed(seed), decode_ctx, prefills, heads, head_dim, block_size, dtype,
             cache_dtype)


def test_prefill_plan_is_built_once_per_step(monkeypatch):
    """Layers of one step share one tile map; a new step (same sizes, other query
    lengths) gets its own, so a stale plan cannot attend with the wrong tiles."""
    calls = []
    real = triton_backend.build_tile_map

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)
    monkeypatch.setattr(triton_backend, "build_tile_map", counting)
    gen = torch.Generator().manual_seed(5)
    backend = get_attention_backend("triton")
    # Same token and sequence counts; the long chunk (two 32-row tiles) moves to the other sequence.
    for prefills, expected_calls in (([(3, 40), (0, 1)], 1), ([(10, 1), (0, 40)], 2)):
        step = make_step(gen, [9], prefills, (2, 1), 16, 8, torch.float32, None)
        fresh = step.kv_cache.clone()
        for layer in range(2):                # every layer's call gets the step's one metadata object
            cache = fresh.clone()
            out = backend.forward(step.query, step.key, step.value, cache, None, step.metadata, step.scale)
            assert_close(out, oracle(step, None), tolerance(torch.float32), f"step {expected_calls}, layer {layer}")
        assert len(calls) == expected_calls
