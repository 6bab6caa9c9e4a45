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

try:        # the C getenv Triton's own knobs read: 0.05 us against os.environ's ~0.7 (one read per launcher call)
    from triton._C.libtriton import getenv as _getenv
except ImportError:
    _getenv = os.environ.get

LOG2E = 1.4426950408889634   # exp(x) = exp2(x * LOG2E): the kernels fold it into their score scale


def is_interpreting() -> bool:
    """True when Triton runs kernels through its CPU interpreter (TRITON_INTERPRET=1)."""
    return _getenv("TRITON_INTERPRET") not in (None, "", "0")


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
def byte_to_fp16_asm(x, IS_INT8: tl.constexpr, PURE: tl.constexpr = True):
    """int8 or float8e4nv -> float16, exact, four bytes per 32-bit register (inline
    PTX: compiled code only). fp8: the hardware's paired cvt (sm_89+). int8: x + 128
    placed under the float16 exponent of 1024 (0x64 high byte) reads as 1152 + x,
    so one paired subtraction gives x - no per-value I2F/F2F, whose 16/clock/SM
    rate bounded the quantised decode.

    PURE=False makes the asm a scheduling fence: Triton then cannot move a dot
    operand's layout conversion above the up-cast, so a transposed 1-byte operand
    (decode's V) reaches shared memory as float16 and leaves through ldmatrix.trans
    instead of one LDS.U8 per byte (fp8 loop on sm_90, triton 3.6, 2 warps: 892
    instructions against 1493). Timed on the H200 it is slower all the same (B=64
    L=4096 fp8 249 us against 215 us, int8 250 against 228: twice the shared
    memory per program) with both K and V fenced; fencing fp8's V alone is 4%
    faster (206.6 us against 215.1 in one run), so decode does that."""
    if IS_INT8:
        y = tl.inline_asm_elementwise(
            """{
            .reg .b32 u, lo, hi, bias;
            xor.b32 u, $2, 0x80808080;
            prmt.b32 lo, u, 0x64646464, 0x5140;
            prmt.b32 hi, u, 0x64646464, 0x7362;
            mov.b32 bias, 0x64806480;
            sub.f16x2 $0, lo, bias;
            sub.f16x2 $1, hi, bias;
            }""",
            "=r,=r,r", [x.to(tl.uint8, bitcast=True)], dtype=tl.float16, is_pure=PURE, pack=4)
    else:
        y = tl.inline_asm_elementwise(
            """{
            .reg .b16 lo, hi;
            mov.b32 {lo, hi}, $2;
            cvt.rn.f16x2.e4m3x2 $0, lo;
            cvt.rn.f16x2.e4m3x2 $1, hi;
            }""",
            "=r,=r,r", [x.to(tl.uint8, bitcast=True)], dtype=tl.float16, is_pure=PURE, pack=4)
    return y


@triton.jit
def gpu_fence():
    """fence.acq_rel.gpu in every thread (inline PTX: compiled code only): orders this
    thread's memory accesses before and after it for the whole GPU."""
    tl.inline_asm_elementwise("fence.acq_rel.gpu; mov.u32 $0, 0;", "=r", [], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def pow2_normalise_rows(x):
    """(2**e per row, x / 2**e) for float32 x [R, C]: each row's largest |value| in
    [1, 2), exactly (powers of two). e is clamped to [-126, 126], so a subnormal
    row stays below 1, one past 2**127 below 4, and an all-zero row stays 0."""
    top = tl.max(tl.abs(x), axis=1)
    e = ((top.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127
    e = tl.minimum(tl.maximum(e, -126), 126)
    return _pow2(e), x * _pow2(-e)[:, None]


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
