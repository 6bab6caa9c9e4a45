"""kernels/launch.py: the compiled-handle launch must run exactly the kernel Triton's
JIT would run.

On CPU: the Python specialisation key against Triton's own specialiser
(`native_specialize_impl`, what the JIT's binder calls per argument): every int
class and every stand-in that `compiled` hands to `warmup` specialises as the
real argument does, so the warmed-up kernel is the JIT's kernel for those
arguments; what the key cannot cover (unaligned pointers, bools, huge ints) is
left to the JIT. On a GPU: launches through the handle give bitwise the same
outputs as the JIT path, also when an argument's class changes between calls.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from kernels import launch as launch_mod
from kernels.launch import FLOAT, Kernel, arg_classes, int_class, stand_ins

native = pytest.importorskip("triton._C.libtriton").native_specialize_impl
MockTensor = pytest.importorskip("triton.runtime.jit").MockTensor


def _backend():
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    return make_backend(GPUTarget("cuda", 90, 32))


BACKEND = _backend()


def triton_spec(arg: object) -> tuple:
    """How the JIT specialises a non-constexpr argument (no do_not_specialize)."""
    return tuple(native(BACKEND, arg, False, True, True))


EDGES = [0, 1, -1, 2, 15, 16, 17, -16, 4096, 2**31 - 16, 2**31 - 1, 2**31, -2**31, -2**31 - 1, 2**40, 2**40 + 3,
         2**63 - 16, 2**63 - 1, -2**63]


@given(st.one_of(st.sampled_from(EDGES), st.integers(-2**64, 2**64)))
@example(2**63)
def test_int_classes_match_triton(v: int) -> None:
    c = int_class(v)
    if c is None:                        # not covered: the JIT decides (u64 and beyond)
        assert not -2**63 <= v < 2**63
        return
    assert triton_spec(stand_ins(((), (c,)))[0]) == triton_spec(v), (v, c)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int8, torch.int32,
                                   torch.int64, torch.float8_e4m3fn])
def test_tensor_stand_ins_match_triton(dtype: torch.dtype) -> None:
    """An aligned tensor specialises like the dtype stand-in `warmup` gets; a misaligned
    view is left to the JIT."""
    t = torch.zeros(64, dtype=dtype)
    assert t.data_ptr() % 16 == 0
    assert triton_spec(t) == triton_spec(MockTensor.wrap_dtype(dtype))
    key = arg_classes(Kernel(_Fake), (t,), (3, 0.5))
    assert key == ((dtype,), (launch_mod.I32, FLOAT))
    assert triton_spec(t[1:])[1] != "D"          # Triton too sees the view unaligned
    assert arg_classes(Kernel(_Fake), (t[1:],), (3, 0.5)) is None


def test_floats_and_uncovered_scalars() -> None:
    assert triton_spec(stand_ins(((), (FLOAT,)))[0]) == triton_spec(0.125)
    t = torch.zeros(4)
    assert arg_classes(Kernel(_Fake), (t,), (True, 1)) is None         # a bool: the JIT's business
    assert arg_classes(Kernel(_Fake), (t,), (2**64, 1)) is None


class _Fake:
    """Stands in for a kernel object in the key functions (only arg_names is read)."""
    arg_names = ["x_ptr", "a", "b", "BLOCK"]
    __name__ = "_Fake"


def test_kernel_wrapper_checks_the_constexpr_names() -> None:
    Kernel(_Fake, "BLOCK")
    with pytest.raises(TypeError, match="constexpr parameters"):
        Kernel(_Fake, "OTHER")
    with pytest.raises(TypeError, match="constexpr parameters"):
        Kernel(_Fake, "b", "BLOCK", "EXTRA")


gpu = pytest.mark.gpu


def _outputs(monkeypatch: pytest.MonkeyPatch, jit: bool, run) -> list[torch.Tensor]:
    """`run()`'s outputs with launches through the handle (jit False) or the JIT."""
    with monkeypatch.context() as m:
        if jit:
            m.setattr(launch_mod, "jit_modes_off", lambda: False)
        out = run()
        torch.cuda.synchronize()
        return [o.clone() for o in out]


@gpu
def test_handle_and_jit_launches_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Decode (with and without split-K and PDL, bf16 and fp8), prefill and write_kv:
    bitwise the same outputs, calls whose int classes change included (a split of 1
    token specialises that argument as a constexpr), and a misaligned query view."""
    from bench.problems import decode_problem, prefill_problem, write_problem
    from kernels import DecodeWorkspace, paged_decode, paged_prefill, write_kv
    d = decode_problem(8, 1000, 32, 8, 128, device="cuda", seed=1)
    f8 = decode_problem(4, 300, 16, 4, 128, cache_dtype=torch.float8_e4m3fn, device="cuda", seed=2)
    p = prefill_problem(2, 300, 8, 2, 64, device="cuda", seed=3)
    w = write_problem(100, 8, 128, device="cuda", seed=4)
    ws = DecodeWorkspace()
    odd = torch.randn((8, 32 * 128 + 1), device="cuda").bfloat16()[:, 1:].view(8, 32, 128)   # 2-byte offset

    def run() -> list[torch.Tensor]:
        outs = []
        for splits in (None, 1, 3, 1000):            # 1000 splits of 1000 tokens: split_len 1
            outs.append(paged_decode(d.query, d.kv_cache, d.block_tables, d.context_lens, d.scale,
                                     num_splits=splits, workspace=ws))
        outs.append(paged_decode(f8.query, f8.kv_cache, f8.block_tables, f8.context_lens, f8.scale,
                                 f8.kv_scales, num_splits=4, pdl=False))
        outs.append(paged_decode(odd, d.kv_cache, d.block_tables, d.context_lens, d.scale))
        outs.append(paged_prefill(p.query, p.kv_cache, p.block_tables, p.query_start_loc, p.context_lens, p.scale))
        cache = torch.zeros_like(w.kv_cache)
        write_kv(w.key, w.value, cache, w.slot_mapping)
        outs.append(cache)
        return outs

    handle, jit = _outputs(monkeypatch, False, run), _outputs(monkeypatch, True, run)
    for i, (a, b) in enumerate(zip(handle, jit)):
        assert torch.equal(a.view(torch.uint8), b.view(torch.uint8)), f"output {i} differs"
