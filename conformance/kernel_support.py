"""Shared pieces of the decode / write_kv kernel conformance tests.

The SAME test functions run on CPU (Triton interpreter, small sizes) and on a
CUDA GPU (full sizes); `size_plan()` is the one place that decides.

Written tolerances for compiled GPU code (decode output vs the float64 oracle;
`rel` bounds ‖out − ref‖/‖ref‖ of every output row — one token and head —
elementwise |out − ref| <= atol·RMS(row of ref) + rtol·|ref|; the interpreter on
CPU has its own, tighter table below, `_CPU_TOLERANCES`):

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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from conformance.paged_cases import PagedKV
from reference.attention import paged_decode as oracle_paged_decode

T = TypeVar("T")


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


def rotated(values: Sequence[T], salt: int) -> tuple[T, ...]:
    """`values` rotated by `salt`. Derandomised Hypothesis makes the same choice
    indices in every parametrized variant of a test; sampling from a list rotated
    by a per-variant salt maps them to different values, so variants differ."""
    k = salt % len(values)
    return tuple(values[k:]) + tuple(values[:k])


@dataclass(frozen=True)
class Tolerance:
    rel: float
    atol: float
    rtol: float


# Compiled GPU code: native bf16/fp16/tf32-free dots (the module docstring's table).
_GPU_TOLERANCES = {torch.float32: Tolerance(2e-5, 1e-5, 1e-5), torch.float16: Tolerance(3e-3, 4e-3, 4e-3),
                   torch.bfloat16: Tolerance(1.5e-2, 2e-2, 2e-2)}
# The interpreter: dots in float32 (DOT_FP32), so only the rounding of p to the dot
# dtype and of the output remain. Worst seen over the CPU decode suite (ci and dev
# profiles, 2026-11-28), row relative / element |diff| over its row's RMS: float32
# 7.6e-7 / 1.8e-6, float16 2.8e-4 / 1.7e-3, bfloat16 2.3e-3 / 1.2e-2; bounds ~3x that.
_CPU_TOLERANCES = {torch.float32: Tolerance(3e-6, 6e-6, 6e-6), torch.float16: Tolerance(1e-3, 5e-3, 2e-3),
                   torch.bfloat16: Tolerance(8e-3, 3e-2, 1e-2)}


def tolerance(query_dtype: torch.dtype) -> Tolerance:
    """Bounds for the kernel's output vs the float64 oracle, by query dtype, for
    where the tests run (interpreter on CPU, compiled on a GPU)."""
    table = _GPU_TOLERANCES if torch.cuda.is_available() else _CPU_TOLERANCES
    return table[query_dtype]


def quantised_vs_bf16_rel(cache_dtype: torch.dtype) -> float:
    return 3e-2 if cache_dtype == torch.int8 else 1e-1


def row_errors(out: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per output row (one query token and head, float64): ‖out − ref‖ / ‖ref‖,
    the elements' |out − ref| and the row's RMS(ref). Per row, so a long context's
    row is not averaged away by short ones (its values shrink like 1/sqrt(context)).
    A zero reference row (context 0) gets a unit scale: it must come out ~zero."""
    out64, ref64 = out.double().cpu(), ref.double().cpu()
    d = ref64.shape[-1]
    diff = (out64 - ref64).reshape(-1, d)
    norm = ref64.reshape(-1, d).norm(dim=1)
    scale = torch.where(norm > 0, norm, torch.ones_like(norm))
    return diff.norm(dim=1) / scale, diff.abs(), (scale / d ** 0.5)[:, None]


def assert_close(out: torch.Tensor, ref: torch.Tensor, tol: Tolerance, what: str = "") -> None:
    """Every row within tol.rel (relative, per row); every element within
    tol.atol x its row's RMS + tol.rtol x |ref|."""
    out64, ref64 = out.double().cpu(), ref.double().cpu()
    assert torch.isfinite(out64).all(), f"{what}: non-finite output"
    row_rel, diff, rms = row_errors(out64, ref64)
    worst = int(row_rel.argmax())
    assert float(row_rel[worst]) <= tol.rel, (f"{what}: row {worst} (of {row_rel.numel()}) relative error "
                                              f"{float(row_rel[worst]):.3g} > {tol.rel}")
    bad = diff > tol.atol * rms + tol.rtol * ref64.reshape(diff.shape).abs()
    assert not bad.any(), (f"{what}: {int(bad.sum())} elements off, worst {float((diff / rms).max()):.3g} "
                           f"x its row's RMS")


GUARD_ROWS = 256   # NaN rows (of the output's trailing shape) on each side of a poisoned buffer


def poisoned_like(x: torch.Tensor) -> torch.Tensor:
    """An output buffer full of NaN, inside a larger NaN buffer: whatever the kernel
    fails to write stays NaN, and a write past either end (up to GUARD_ROWS rows,
    more than any kernel tile) lands in the guard (see `assert_guard_intact`)
    rather than in other memory."""
    guard = GUARD_ROWS * (x[0].numel() if x.dim() > 1 and x.shape[0] else 16)
    buf = torch.full((x.numel() + 2 * guard,), float("nan"), dtype=x.dtype, device=x.device)
    return buf[guard:guard + x.numel()].view(x.shape)


def assert_guard_intact(out: torch.Tensor, what: str = "") -> None:
    """The NaN guard around a `poisoned_like` buffer is untouched: no write past its ends."""
    base = out._base
    assert base is not None and base.numel() > out.numel(), "not a poisoned_like buffer"
    guard = (base.numel() - out.numel()) // 2
    rest = torch.cat([base[:guard], base[guard + out.numel():]]).float()
    assert rest.isnan().all(), f"{what}: {int((~rest.isnan()).sum())} writes outside the output tensor"


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


def spy_full_paths(monkeypatch, launcher_module: object) -> list[int]:
    """One entry per call of `launcher_module`'s launcher that ran the argument checks
    (its `check_attention`): tells a full-path call from a replayed plan."""
    calls: list[int] = []
    real = launcher_module.check_attention
    monkeypatch.setattr(launcher_module, "check_attention", lambda *a: calls.append(1) or real(*a))
    return calls
