"""The value conversions the quantised decode path is built on, checked exactly.

- `byte_to_fp16_asm` (inline PTX, GPU only: the interpreter runs no PTX) must
  give every int8 and float8e4nv byte its exact float16 value, as torch does.
- `pow2_normalise_rows` must scale each row by a power of two (so exactly) into
  [1, 2) at its largest |value| (below 1 for subnormal rows, below 4 past
  2**127, where the power is clamped), whatever the row holds: zeros,
  subnormals, bf16's largest values; runs under the interpreter and compiled.
"""
from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

from kernels.triton_compat import byte_to_fp16_asm, pow2_normalise_rows

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@triton.jit
def _bytes_to_fp16_kernel(x_ptr, out_ptr, IS_INT8: tl.constexpr):
    i = tl.arange(0, 256)
    tl.store(out_ptr + i, byte_to_fp16_asm(tl.load(x_ptr + i), IS_INT8))


@triton.jit
def _normalise_kernel(x_ptr, scale_ptr, out_ptr, COLS: tl.constexpr):
    r = tl.arange(0, 16)
    c = tl.arange(0, COLS)
    x = tl.load(x_ptr + r[:, None] * COLS + c[None, :])
    scale, y = pow2_normalise_rows(x)
    tl.store(scale_ptr + r, scale)
    tl.store(out_ptr + r[:, None] * COLS + c[None, :], y)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.int8, torch.float8_e4m3fn], ids=["int8", "fp8"])
def test_every_byte_converts_exactly(dtype: torch.dtype) -> None:
    raw = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(dtype).to(DEVICE)
    want = raw.to(torch.float16)        # e4m3fn's 0x7F / 0xFF are NaN: compared as NaN below
    got = torch.empty(256, dtype=torch.float16, device=DEVICE)
    _bytes_to_fp16_kernel[(1,)](raw, got, IS_INT8=dtype == torch.int8)
    nan = torch.isnan(want)
    assert torch.equal(torch.isnan(got), nan)
    assert torch.equal(got[~nan], want[~nan]), (got[~nan] != want[~nan]).nonzero()


def test_rows_normalise_exactly_by_powers_of_two() -> None:
    gen = torch.Generator().manual_seed(3)
    cols = 32
    x = torch.randn(16, cols, generator=gen, dtype=torch.float32)
    x = x.to(torch.bfloat16).to(torch.float32)           # the query values the kernel sees
    x[0] = 0.0                                           # an all-zero row (a padded GQA row)
    x[1] *= 1e-39                                        # subnormal float32 values
    x[2] *= 1e30                                         # far past float16's range
    x[3] = torch.finfo(torch.bfloat16).max               # bf16's largest
    x[4, 5] = -7.0                                       # the largest |value| negative
    x[4, :5] = 0.5
    x[4, 6:] = 0.25
    x[5] = 2.0 ** -126                                   # the smallest normal
    scale = torch.empty(16, dtype=torch.float32)
    y = torch.empty_like(x)
    x_d, scale_d, y_d = x.to(DEVICE), scale.to(DEVICE), y.to(DEVICE)
    _normalise_kernel[(1,)](x_d, scale_d, y_d, COLS=cols)
    scale, y = scale_d.cpu(), y_d.cpu()
    assert torch.equal(torch.frexp(scale).mantissa, torch.full_like(scale, 0.5)), "scales are powers of two"
    assert torch.equal(y.double() * scale.double()[:, None], x.double()), "x == y * scale exactly"
    top = y.abs().amax(dim=1)
    assert top[0] == 0 and torch.all(y[0] == 0)
    normal = torch.tensor([i not in (0, 1, 3) for i in range(16)])
    assert torch.all((top[normal] >= 1) & (top[normal] < 2)), top
    assert 0 < top[1] < 1, "a subnormal row: scale clamped at 2**-126, values exact but below 1"
    assert 2 <= top[3] < 4, "bf16's largest: scale clamped at 2**126"
    assert torch.all(y[2:].abs() <= torch.finfo(torch.float16).max), "every row fits float16"
    assert y[4, 5] == -1.75 and scale[4] == 4.0
