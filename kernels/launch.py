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
(`warmup`), so it is exactly the kernel the JIT would run. The launch goes to
the compiled kernel's launcher object with the current device's current stream,
which is what `compiled[grid](*args)` (Triton's public handle) does after
building a closure and asking torch twice for the device: 4.7 us of the 17.6 us
that handle took per launch on the H200 machine (`python -m bench.profile_launch`).
With a launch hook installed (Triton's profiling knobs) the public handle runs
instead, so the hooks see every launch; with none, the launcher gets no hooks and
no launch metadata (Triton 3.6's own launch builds both for an empty hook chain).

What the key does not cover goes the JIT way, always correct: the interpreter,
a pointer not 16-byte aligned, an argument of another type, and Triton's debug
or instrumentation modes (they change what the JIT compiles).

`prepare` does `launch`'s work once and keeps it (`Prepared`) for a caller that
repeats a launch with tensors of the same dtypes and alignment
(kernels/decode_plan.py); `run_prepared` then asks per call only what may move
between calls: the debug modes, the current device, hooks and stream.
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple

import torch
from triton import knobs
from triton.runtime.jit import JITFunction

# The current device and its current stream as Triton's own launch asks for them, minus
# torch.cuda.current_device's Python checks (a CPU-only torch has neither: no compiled launch there).
_current_device = getattr(torch._C, "_cuda_getDevice", None)
_current_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)

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


class Compiled(NamedTuple):
    """A compiled kernel and what its launcher is called with (CompiledKernel.__getitem__'s
    closure, unrolled): run(gx, gy, gz, stream, function, packed_metadata, launch_metadata,
    enter_hook, exit_hook, *args)."""
    handle: Any                 # triton.compiler.CompiledKernel
    run: Any                    # its launcher object
    function: int               # the loaded CUfunction
    packed_metadata: Any


@functools.lru_cache(maxsize=1024)
def compiled(kernel: Kernel, device: int, key: tuple, consts: tuple, options: tuple) -> Compiled | None:
    """The compiled kernel the JIT runs for arguments of classes `key`, constexprs
    `consts` (in signature order) and launch `options` on CUDA device `device`
    (None when a JIT cache hook took the compile over)."""
    return warmed_up(kernel.fn, device, (*stand_ins(key), *consts), dict(options))


def warmed_up(fn: Any, device: int, args: tuple, kwargs: dict) -> Compiled | None:
    """`fn.warmup(*args, **kwargs)` on CUDA device `device`: the compiled kernel the JIT
    would run for arguments like these, loaded (None when a JIT cache hook took the
    compile over). Callers cache it (`compiled`, kernels/prefill_sm90_launch.py)."""
    with torch.cuda.device(device):
        handle = fn.warmup(*args, grid=(1,), **kwargs)
        handle = handle.result() if hasattr(handle, "result") else handle   # an async-compile future
        if handle is None:
            return None
        handle._init_handles()                       # loads the module: a launch needs no more setup
    return Compiled(handle, handle.run, handle.function, handle.packed_metadata)


def current_device() -> int:
    """The current CUDA device index, as Triton's launch asks for it."""
    return _current_device()


def jit_modes_off() -> bool:
    """Debug, instrumentation and sanitiser modes change what the JIT compiles: leave those to it."""
    comp = knobs.compilation
    return not (knobs.runtime.debug or getattr(comp, "instrumentation_mode", "")
                or getattr(comp, "fpsan_homomorphic_casts", False))


def _installed(hook: object) -> bool:
    """Whether a Triton launch hook would do anything: Triton 3.6 keeps a HookChain
    there (never None; its public launch then builds launch metadata and calls the
    empty chain on every launch), older Triton None or a callable."""
    return hook is not None and bool(getattr(hook, "calls", True))


def run_compiled(kern: Compiled, grid: tuple[int, int, int], device: int, ptrs: tuple, scalars: tuple,
         consts: tuple) -> None:
    """Launch a compiled kernel: its launcher object directly, or with a launch hook
    installed the public handle (which calls the hooks)."""
    hooks = knobs.runtime
    if not (_installed(hooks.launch_enter_hook) or _installed(hooks.launch_exit_hook)):
        kern.run(grid[0], grid[1], grid[2], _current_stream(device), kern.function, kern.packed_metadata,
                 None, None, None, *ptrs, *scalars, *consts)
    else:
        kern.handle[grid](*ptrs, *scalars, *consts)


def _find(kernel: Kernel, ptrs: tuple, scalars: tuple, consts: tuple,
          options: tuple[tuple[str, object], ...]) -> tuple[int | None, Compiled | None]:
    """The current device and the compiled kernel the JIT would run for these arguments,
    or (None, None) where the JIT path must run: the interpreter, a debug mode, an
    argument the key does not cover, or a JIT cache hook that took the compile over."""
    if not (kernel.jit and jit_modes_off()):
        return None, None
    key = arg_classes(kernel, ptrs, scalars)
    if key is None:
        return None, None
    device = _current_device()
    return device, compiled(kernel, device, key, consts, options)


def launch(kernel: Kernel, grid: tuple[int, int, int], ptrs: tuple, scalars: tuple, consts: tuple,
           options: tuple[tuple[str, object], ...] = ()) -> None:
    """Launch `kernel` on `grid` with runtime arguments `ptrs` (the tensors) then
    `scalars`, constexpr values `consts` (all in signature order) and launch
    `options` such as num_warps."""
    device, kern = _find(kernel, ptrs, scalars, consts, options)
    if kern is not None:
        run_compiled(kern, grid, device, ptrs, scalars, consts)
    else:
        kernel.fn[grid](*ptrs, *scalars, *consts, **dict(options))


class Prepared(NamedTuple):
    """One launch with everything but its tensors fixed, for a caller that keeps it
    between calls whose tensors have the same dtypes and 16-byte alignment
    (kernels/decode_plan.py)."""
    kernel: Kernel
    grid: tuple[int, int, int]
    scalars: tuple
    consts: tuple
    options: tuple[tuple[str, object], ...]
    device: int | None          # the current CUDA device `kern` was found for
    kern: Compiled | None       # None: each run goes through `launch` (interpreter, JIT path)


def prepare(kernel: Kernel, grid: tuple[int, int, int], ptrs: tuple, scalars: tuple, consts: tuple,
            options: tuple[tuple[str, object], ...] = ()) -> Prepared:
    """`launch`'s arguments with the compiled kernel it would choose for `ptrs`'
    dtypes and alignment (the tensors themselves are not kept)."""
    device, kern = _find(kernel, ptrs, scalars, consts, options)
    return Prepared(kernel, grid, scalars, consts, options, device, kern)


def run_prepared(p: Prepared, ptrs: tuple) -> None:
    """Launch `p` with `ptrs`, whose dtypes and 16-byte alignment are those it was
    prepared with (the caller's key guarantees it). What `launch` decides per call
    (debug modes, the current device, hooks) is asked again; if any moved, `launch`."""
    kern = p.kern
    if kern is not None and jit_modes_off() and _current_device() == p.device:
        run_compiled(kern, p.grid, p.device, ptrs, p.scalars, p.consts)
    else:
        launch(p.kernel, p.grid, ptrs, p.scalars, p.consts, p.options)
