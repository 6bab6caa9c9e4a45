"""Shared pieces of the decode / write_kv kernel conformance tests.

The SAME test functions run on CPU (Triton interpreter, small sizes) and on a
CUDA GPU (full sizes); `size_plan()` is the one place that decides.

Written tolerances (decode output vs the float64 oracle; `rel` bounds
‖out − ref‖/‖ref‖, elementwise |out − ref| <= atol + rtol·|ref|):

| query dtype | rel    | atol, rtol | why |
|-------------|--------|------------|-----|
| float32     | 2e-5   | 1e-5, 1e-5 | ieee (not tf32) dots on the GPU; float32 softmax, approximate exp2 |
| float16     | 3e-3   | 4e-3, 4e-3 | fp16 dot operands (p rounded to fp16) + fp16 output rounding (2^-11) |
| bfloat16    | 1.5e-2 | 2e-2, 2e-2 | bf16 dot operands (p rounded to bf16) + bf16 output rounding (2^-8) |

Quantised caches are held to the same bounds against the oracle fed the
dequantised cache (int8/fp8 values are exact in every query dtype, so the
kernel's only extra rounding is the same p/output rounding; with a bf16 or
fp16 query the decode kernel's dots run in float16 - the query scaled per head
by a power of two, exactly - so p rounds to float16, tighter than bf16). Against the
float64 result of a bf16 cache holding the same K/V (the quantisation error
itself) the bounds are looser: int8 rel 3e-2, fp8 e4m3 rel 1e-1 (measured on
CPU, head_dim 128, contexts to 130: int8 0.8-0.9 %, fp8 2.9-3.6 %; e4m3 keeps
3 mantissa bits, up to 2^-4 relative error per value).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from conformance.paged_cases import PagedKV, rel_error
from reference.attention import paged_decode as oracle_paged_decode


@dataclass(frozen=True)
class SizePlan:
    device: str
    max_seqs: int          # sequences per batch
    long_context: int      # the first `long_seqs` sequences of a batch draw contexts up to this
    long_seqs: int
    short_context: int     # the others up to this (keeps the oracle's per-token loop affordable)
    decode_examples: int   # Hypothesis examples of the random decode test
    write_examples: int
    write_max_tokens: int


def size_plan() -> SizePlan:
    """CPU: the interpreter pays ~1 ms per tile op, so a few sequences of <= 130 tokens.
    GPU: batches up to 64 and contexts past 4096. There the float64 oracle (a
    Python loop per token, ~30-80 us/token) and Triton compiles (~1 s per new
    shape) set the cost, so only two sequences per batch are long and the example
    counts are modest: the GPU suite gives all kernel tests ~140 s."""
    if torch.cuda.is_available():
        return SizePlan("cuda", max_seqs=64, long_context=4200, long_seqs=2, short_context=300,
                        decode_examples=20, write_examples=30, write_max_tokens=1024)
    return SizePlan("cpu", max_seqs=4, long_context=130, long_seqs=4, short_context=130,
                    decode_examples=30, write_examples=30, write_max_tokens=40)


@dataclass(frozen=True)
class Tolerance:
    rel: float
    atol: float
    rtol: float


def tolerance(query_dtype: torch.dtype) -> Tolerance:
    """The table in this module's docstring."""
    if query_dtype == torch.float32:
        return Tolerance(2e-5, 1e-5, 1e-5)
    if query_dtype == torch.float16:
        return Tolerance(3e-3, 4e-3, 4e-3)
    return Tolerance(1.5e-2, 2e-2, 2e-2)


def quantised_vs_bf16_rel(cache_dtype: torch.dtype) -> float:
    return 3e-2 if cache_dtype == torch.int8 else 1e-1


def assert_close(out: torch.Tensor, ref: torch.Tensor, tol: Tolerance, what: str = "") -> None:
    out64, ref64 = out.double().cpu(), ref.double().cpu()
    assert torch.isfinite(out64).all(), f"{what}: non-finite output"
    err = rel_error(out64, ref64)
    assert err <= tol.rel, f"{what}: relative error {err:.3g} > {tol.rel}"
    bad = (out64 - ref64).abs() > tol.atol + tol.rtol * ref64.abs()
    assert not bad.any(), (f"{what}: {int(bad.sum())} elements off, worst |diff| "
                           f"{float((out64 - ref64).abs().max()):.3g}")


def poisoned_like(x: torch.Tensor) -> torch.Tensor:
    """An output buffer full of NaN: whatever the kernel fails to write stays NaN."""
    return torch.full_like(x, float("nan"))


def compact_cpu(kv: PagedKV) -> PagedKV:
    """The blocks the tables reference, copied to the CPU with the tables
    renumbered: the oracle then reads a small CPU cache (not the 32,768-block
    GPU cache once per sequence). Poisoned slots travel with their blocks."""
    ids = torch.unique(kv.block_tables.long().flatten())
    remap = torch.full((kv.kv_cache.shape[0],), -1, dtype=torch.long, device=ids.device)
    remap[ids] = torch.arange(ids.numel(), device=ids.device)
    tables = remap[kv.block_tables.long()].to(torch.int32)
    scales = None if kv.kv_scales is None else kv.kv_scales[ids].cpu()
    # Index the bytes: not every torch build indexes float8 tensors on CUDA.
    raw = kv.kv_cache.view(torch.uint8) if kv.kv_cache.element_size() == 1 else kv.kv_cache
    cache = raw[ids].cpu().view(kv.kv_cache.dtype)
    return PagedKV(cache, scales, tables.cpu(), kv.context_lens.cpu())


def oracle_decode(query: torch.Tensor, kv: PagedKV, scale: float) -> torch.Tensor:
    """float64 oracle output [B, Hq, D]; rows of context 0 are zeros (the
    kernel's documented choice; the oracle cannot gather an empty context)."""
    small = compact_cpu(kv)
    q = query.cpu()
    out = torch.zeros(q.shape, dtype=torch.float64)
    rows = [i for i, c in enumerate(small.context_lens.tolist()) if c > 0]
    if rows:
        idx = torch.tensor(rows)
        out[idx] = oracle_paged_decode(q[idx], small.kv_cache, small.block_tables[idx],
                                       small.context_lens[idx], scale, small.kv_scales)
    return out
