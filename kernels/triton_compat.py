"""Helpers that keep the kernels' numbers right under the Triton interpreter.

The interpreter (triton 3.9, CPU) differs from compiled GPU code in ways that
matter to us; each helper takes an INTERPRET / DOT_FP32 constexpr so compiled
code keeps the fast native path and only the interpreter takes the workaround:

- `tl.dot` on bfloat16 operands multiplies the raw bit patterns (DESIGN.md,
  "Known trap"), and int8 -> bfloat16 casts are bit reinterpretations: dot
  operands are cast to float32 when interpreting.
- float32 -> bfloat16 casts truncate, and float32 -> float8e4nv casts round
  half away from zero and corrupt the exponent when the mantissa carries: we
  round to the target grid ourselves (ties to even), so the cast is exact.
- `libdevice` functions are stubs returning None: `rint` uses the 1.5 * 2**23
  trick instead (exact round-half-even for |x| < 2**22, which covers the
  int8 range we use it for).
"""
from __future__ import annotations

import os

import triton
import triton.language as tl
from triton.language.extra import libdevice


def is_interpreting() -> bool:
    """True when Triton runs kernels through its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def dot_in_fp32() -> bool:
    """Value for the kernels' DOT_FP32 constexpr: cast dot operands to float32 only when interpreting."""
    return is_interpreting()


@triton.jit
def dot_operand(x, DTYPE: tl.constexpr, DOT_FP32: tl.constexpr):
    """`x` as a tl.dot operand of DTYPE (float32 under the interpreter)."""
    if DOT_FP32:
        y = x.to(tl.float32)
    else:
        y = x.to(DTYPE)
    return y


@triton.jit
def round_half_even(x, INTERPRET: tl.constexpr):
    """float32 round to nearest integer, ties to even (like torch.round); |x| < 2**22."""
    if INTERPRET:
        y = (x + 12582912.0) - 12582912.0
    else:
        y = libdevice.rint(x)
    return y


@triton.jit
def _pow2(e):
    """2**e as float32 for an int32 tensor e in the normal range."""
    return ((e + 127) << 23).to(tl.float32, bitcast=True)


@triton.jit
def to_fp8e4m3(x, INTERPRET: tl.constexpr):
    """float32 with |x| <= 448 -> float8e4nv, round to nearest even."""
    if INTERPRET:
        # e4m3 keeps 3 mantissa bits; below 2**-6 the spacing is fixed at 2**-9.
        exp = ((x.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127
        ulp = _pow2(tl.maximum(exp, -6) - 3)
        x = round_half_even(x / ulp, INTERPRET) * ulp   # power-of-two scaling: exact
    return x.to(tl.float8e4nv)


@triton.jit
def to_output(x, DTYPE: tl.constexpr, INTERPRET: tl.constexpr):
    """float32 -> DTYPE for a store, round to nearest even also under the interpreter."""
    if INTERPRET:
        if DTYPE == tl.bfloat16:
            bits = x.to(tl.int32, bitcast=True)
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & -65536   # keep the top 16 bits, RNE
            x = bits.to(tl.float32, bitcast=True)
    return x.to(DTYPE)
