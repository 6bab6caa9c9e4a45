"""Kernel launches through Triton's compiled-kernel handle instead of its JIT dispatch.

`fn[grid](*args, **meta)` spends most of its host time choosing the compiled
kernel: it binds every argument to the signature, specialises each one (a
pointer's dtype and 16-byte alignment; an int equal to 1, divisible by 16,
32- or 64-bit), builds a string key and looks it up. Profiled on the CPU of the
development machine for the decode kernel's 34 runtime arguments: 20 us of
binding alone, 31 us with the key, more than a bare launch costs in all.

`launch` keys the compiled kernel on the same facts, computed in Python
(`arg_classes`; conformance/test_kernel_launch.py holds them against Triton's own
specialiser), and gets it through a functools cache of a pure function of that
key: `compiled` asks the JIT for it with stand-in arguments of the same classes
(`warmup`), so it is exactly the kernel the JIT would run. The launch itself is
`compiled[grid](*args)`, Triton's public handle for a pre-compiled kernel (the
same current device, stream and launch hooks as the JIT's launch).

What the key does not cover goes the JIT way, always correct: the interpreter,
a pointer not 16-byte aligned, an argument of another type, and Triton's debug
or instrumentation modes (they change what the JIT compiles).
"""
from __future__ import annotations

import functools
from typing import Any

import torch
from triton import knobs
from triton.runtime.jit import JITFunction

_I32 = (-2**31, 2**31)
_I64 = (-2**63, 2**63)
# Classes of a non-constexpr int argument, as Triton specialises them, and a
# stand-in value of each for `warmup`.
ONE, I32_DIV16, I32, I64_DIV16, I64 = range(5)
_STAND_IN = {ONE: 1, I32_DIV16: 16, I32: 17, I64_DIV16: 2**40, I64: 2**40 + 1}
FLOAT = "fp32"


def next_pow2(n: int) -> int:
    """Smallest power of two >= n (n >= 1); triton.next_power_of_2 costs ~1 us per host call."""
    return 1 << (n - 1).bit_length()


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


class Kernel:
    """A @triton.jit kernel whose constexpr parameters, named `consts` in order,
    all come after its runtime ones: `launch` passes both positionally, so a
    signature that changes under it is a TypeError here, at import, not a silent
    mix-up. Hashes by identity: a cheap key for `compiled`."""

    __slots__ = ("fn", "jit", "num_runtime")

    def __init__(self, fn: Any, *consts: str) -> None:
        self.fn = fn
        self.jit = isinstance(fn, JITFunction)          # False under TRITON_INTERPRET=1
        names = list(fn.arg_names)
        self.num_runtime = len(names) - len(consts)
        if names[self.num_runtime:] != list(consts):
            raise TypeError(f"{fn.__name__}: constexpr parameters {names[self.num_runtime:]} != {list(consts)}")
        if self.jit and [p.is_constexpr for p in fn.params] != [i >= self.num_runtime for i in range(len(names))]:
            raise TypeError(f"{fn.__name__}: exactly the trailing parameters {list(consts)} must be constexpr")

    def __repr__(self) -> str:
        return f"Kernel({self.fn.__name__})"


def int_class(v: int) -> int | None:
    """Triton's specialisation of a non-constexpr int argument (None: not covered)."""
    if v == 1:
        return ONE
    div16 = v % 16 == 0
    if _I32[0] <= v < _I32[1]:
        return I32_DIV16 if div16 else I32
    if _I64[0] <= v < _I64[1]:
        return I64_DIV16 if div16 else I64
    return None


def arg_classes(kernel: Kernel, ptrs: tuple, scalars: tuple) -> tuple | None:
    """The specialisation key of a kernel's runtime arguments, pointers first (every
    kernel here takes them so): each tensor's dtype (16-byte aligned tensors only),
    then each scalar's class. None when an argument is not covered."""
    for p in ptrs:
        if p.data_ptr() & 15:
            return None
    classes = scalar_classes(kernel, scalars)
    return None if classes is None else (tuple([p.dtype for p in ptrs]), classes)


@functools.lru_cache(maxsize=4096)
def scalar_classes(kernel: Kernel, scalars: tuple) -> tuple | None:
    """Classes of `kernel`'s int / float arguments, cached (a launch site's strides
    repeat). Python's 1 == 1.0 == True makes tuples of different types equal keys:
    sound because each kernel has one launch site here, which passes the same
    type at each position (the float softmax scale, ints elsewhere)."""
    out: list[object] = []
    for v in scalars:
        t = type(v)
        if t is float:
            out.append(FLOAT)
        elif t is int:
            c = int_class(v)
            if c is None:
                return None
            out.append(c)
        else:                                   # bool, numpy scalars, ...: the JIT's business
            return None
    return tuple(out)


def stand_ins(key: tuple) -> list[object]:
    """Arguments of the classes in `key` for `warmup` (a dtype stands for an aligned tensor)."""
    dtypes, classes = key
    return [*dtypes, *(1.0 if k == FLOAT else _STAND_IN[k] for k in classes)]


@functools.lru_cache(maxsize=1024)
def compiled(kernel: Kernel, device: int, key: tuple, consts: tuple, options: tuple) -> Any:
    """The compiled kernel the JIT runs for arguments of classes `key`, constexprs
    `consts` (in signature order) and launch `options` on CUDA device `device`."""
    with torch.cuda.device(device):
        handle = kernel.fn.warmup(*stand_ins(key), *consts, grid=(1,), **dict(options))
    return handle.result() if hasattr(handle, "result") else handle   # an async-compile future


def _jit_modes_off() -> bool:
    """Debug, instrumentation and sanitiser modes change what the JIT compiles: leave those to it."""
    comp = knobs.compilation
    return not (knobs.runtime.debug or getattr(comp, "instrumentation_mode", "")
                or getattr(comp, "fpsan_homomorphic_casts", False))


def launch(kernel: Kernel, grid: tuple[int, int, int], ptrs: tuple, scalars: tuple, consts: tuple,
           options: tuple[tuple[str, object], ...] = ()) -> None:
    """Launch `kernel` on `grid` with runtime arguments `ptrs` (the tensors) then
    `scalars`, constexpr values `consts` (all in signature order) and launch
    `options` such as num_warps."""
    if kernel.jit and _jit_modes_off():
        key = arg_classes(kernel, ptrs, scalars)
        # None from `compiled`: a JIT cache hook took the compile over; the JIT path honours it.
        handle = None if key is None else compiled(kernel, torch.cuda.current_device(), key, consts, options)
        if handle is not None:
            handle[grid](*ptrs, *scalars, *consts)
            return
    kernel.fn[grid](*ptrs, *scalars, *consts, **dict(options))
