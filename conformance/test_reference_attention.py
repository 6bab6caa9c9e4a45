"""Meta-tests of the oracles the kernels are held to: reference.attention and reference.quant.

A hand-computed case, torch SDPA in float64, the causal offset, GQA, the paged
gather and the quantisation round trip.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from reference.attention import attention, gather_paged_kv, paged_decode, paged_prefill
from reference.quant import INT8_MAX, dequantize_rows, quantize_rows


def test_hand_computed_single_query() -> None:
    """q = [1, 0]; keys [1, 0] and [0, 1] score 1 and 0; weights e/(e+1), 1/(e+1)."""
    q = torch.tensor([[[1.0, 0.0]]])
    k = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    v = torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]]])
    e = math.e
    want = [(e * 1 + 3) / (e + 1), (e * 2 + 4) / (e + 1)]
    out = attention(q, k, v, scale=1.0)
    assert out.dtype == torch.float64 and out.shape == (1, 1, 2)
    assert torch.allclose(out[0, 0], torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-15)


def test_hand_computed_causal_and_scale() -> None:
    """Two queries over two keys: the first sees only key 0 (output v0 exactly);
    the second sees both with scores scaled by 0.5: 0.5 * [2, 4] = [1, 2]."""
    q = torch.tensor([[[5.0, -3.0]], [[1.0, 1.0]]])
    k = torch.tensor([[[2.0, 0.0]], [[0.0, 4.0]]])
    v = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    out = attention(q, k, v, scale=0.5)
    assert out[0, 0].tolist() == [1.0, 0.0]
    w0, w1 = math.exp(1.0), math.exp(2.0)
    want = torch.tensor([w0 / (w0 + w1), w1 / (w0 + w1)], dtype=torch.float64)
    assert torch.allclose(out[1, 0], want, rtol=0, atol=1e-15)


def sdpa_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, causal: bool) -> torch.Tensor:
    """torch SDPA in float64 with the KV heads repeated and an explicit offset mask."""
    n, c = q.shape[0], k.shape[0]
    group = q.shape[1] // k.shape[1]
    qh = q.double().transpose(0, 1)                                   # [H, n, D]
    kh = k.double().repeat_interleave(group, dim=1).transpose(0, 1)
    vh = v.double().repeat_interleave(group, dim=1).transpose(0, 1)
    mask = None
    if causal:
        mask = torch.arange(c).unsqueeze(0) <= (c - n) + torch.arange(n).unsqueeze(1)
    return F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, scale=scale).transpose(0, 1)


@settings(max_examples=40)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 6), extra=st.integers(0, 9),
       heads=st.sampled_from([(1, 1), (4, 4), (4, 2), (9, 3), (16, 1)]), head_dim=st.sampled_from([4, 16, 80]),
       causal=st.booleans())
def test_matches_sdpa_float64(seed: int, n: int, extra: int, heads: tuple[int, int], head_dim: int,
                              causal: bool) -> None:
    gen = torch.Generator().manual_seed(seed)
    c = n + extra
    q = torch.randn((n, heads[0], head_dim), generator=gen)
    k = torch.randn((c, heads[1], head_dim), generator=gen)
    v = torch.randn((c, heads[1], head_dim), generator=gen)
    scale = head_dim ** -0.5
    out = attention(q, k, v, scale, causal=causal)
    assert torch.allclose(out, sdpa_reference(q, k, v, scale, causal), rtol=1e-12, atol=1e-12)


def test_causal_offset_sees_exactly_its_prefix() -> None:
    """Query i of n with context c depends on keys 0..c-n+i and on no later key."""
    gen = torch.Generator().manual_seed(1)
    n, c, h, d = 3, 8, 2, 4
    q, k, v = (torch.randn(s, generator=gen) for s in ((n, h, d), (c, h, d), (c, h, d)))
    base = attention(q, k, v, 0.5)
    for i in range(n):
        last = c - n + i
        for j in range(c):
            k2, v2 = k.clone(), v.clone()
            k2[j] += 1.0
            v2[j] += 1.0
            changed = not torch.equal(attention(q, k2, v2, 0.5)[i], base[i])
            assert changed == (j <= last), f"query {i} key {j}"


def test_last_query_of_prefill_equals_decode() -> None:
    gen = torch.Generator().manual_seed(2)
    q, k, v = torch.randn((5, 4, 8), generator=gen), torch.randn((9, 2, 8), generator=gen), \
        torch.randn((9, 2, 8), generator=gen)
    assert torch.allclose(attention(q, k, v, 0.3)[-1], attention(q[-1:], k, v, 0.3)[0], rtol=0, atol=1e-14)


def test_gqa_each_head_uses_its_kv_head() -> None:
    """With 6 query heads over 2 KV heads, heads 0-2 attend KV head 0 and 3-5 KV head 1."""
    gen = torch.Generator().manual_seed(3)
    q, k, v = torch.randn((2, 6, 8), generator=gen), torch.randn((5, 2, 8), generator=gen), \
        torch.randn((5, 2, 8), generator=gen)
    out = attention(q, k, v, 0.25)
    for h in range(6):
        kv = h // 3
        single = attention(q[:, h:h + 1], k[:, kv:kv + 1], v[:, kv:kv + 1], 0.25)
        assert torch.allclose(out[:, h], single[:, 0], rtol=0, atol=1e-15)


def scatter_paged(k: torch.Tensor, v: torch.Tensor, table: list[int], num_blocks: int, block_size: int) -> torch.Tensor:
    cache = torch.full((num_blocks, 2, block_size) + tuple(k.shape[1:]), float("nan"), dtype=k.dtype)
    for t in range(k.shape[0]):
        cache[table[t // block_size], 0, t % block_size] = k[t]
        cache[table[t // block_size], 1, t % block_size] = v[t]
    return cache


def test_paged_gather_rebuilds_kv_and_decode_prefill_agree() -> None:
    gen = torch.Generator().manual_seed(4)
    c, bs = 11, 4
    k, v = torch.randn((c, 2, 8), generator=gen), torch.randn((c, 2, 8), generator=gen)
    table = [5, 0, 3]
    cache = scatter_paged(k, v, table, 6, bs)
    gk, gv = gather_paged_kv(cache, table, c)
    assert torch.equal(gk, k.double()) and torch.equal(gv, v.double())
    q = torch.randn((3, 4, 8), generator=gen)
    tables = torch.tensor([table], dtype=torch.int32)
    lens = torch.tensor([c], dtype=torch.int32)
    want = attention(q, k, v, 0.2)
    pre = paged_prefill(q, cache, tables, torch.tensor([0, 3], dtype=torch.int32), lens, 0.2)
    dec = paged_decode(q[-1:], cache, tables, lens, 0.2)
    assert torch.allclose(pre, want, rtol=0, atol=1e-14)
    assert torch.allclose(dec[0], want[-1], rtol=0, atol=1e-14)


@settings(max_examples=30)
@given(seed=st.integers(0, 2**31 - 1), cache_dtype=st.sampled_from([torch.int8, torch.float8_e4m3fn]),
       spread=st.floats(1e-3, 1e3))
def test_quant_round_trip(seed: int, cache_dtype: torch.dtype, spread: float) -> None:
    """Per-row scale = amax / qmax; int8 error <= scale / 2; e4m3 error <= 2**-4 relative
    (or half the subnormal step); the amax element is exact for int8."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((5, 3, 64), generator=gen) * spread
    q, s = quantize_rows(x, cache_dtype)
    assert q.dtype == cache_dtype and s.shape == (5, 3)
    back = dequantize_rows(q, s)
    err = (back - x.double()).abs()
    if cache_dtype == torch.int8:
        assert torch.allclose(s.double(), x.abs().amax(-1).double() / INT8_MAX, rtol=1e-6)
        assert (err <= s.double().unsqueeze(-1) * 0.5 * (1 + 1e-6)).all()
        assert q.abs().amax(-1).eq(127).all()
    else:
        bound = torch.maximum(x.double().abs() * 2**-4, s.double().unsqueeze(-1) * 2**-10)
        assert (err <= bound * (1 + 1e-6)).all()


def test_quant_zero_row_uses_floor_scale() -> None:
    q, s = quantize_rows(torch.zeros(2, 16), torch.int8)
    assert torch.equal(q, torch.zeros(2, 16, dtype=torch.int8))
    assert torch.allclose(s, torch.full((2,), 1e-6 / 127))
