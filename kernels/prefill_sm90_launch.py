"""Launching kernels/prefill_sm90.py's Gluon kernel: `Sm90Launch`, the launch a
PrefillPlan keeps for the layers that repeat a call, and `compiled_sm90`, the
compiled kernel it runs from its first call on (kernels/README.md, "Launch cost",
session 13). kernels/prefill_route.py says when paged_prefill takes this path.
"""
from __future__ import annotations

import collections
import dataclasses
import functools

import torch
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

import kernels.launch as launch            # looked up per call: tests switch its JIT modes
from kernels.prefill_sm90 import prefill_sm90_kernel
from kernels.triton_compat import LOG2E

BLOCK_M = 128
BLOCK_N = 128
NUM_WARPS = 8


# A compiled launch's descriptor arguments: the fields of this Triton's TensorDescriptor
# (the launcher reads them to encode the TMA descriptor), without its __post_init__
# checks, ~3.5 us a descriptor on the H200 machine's CPU (bench.profile_launch_prefill).
# The checks hold for every call a launch is made for: kernels/prefill_route.py refuses
# what would fail them, and a plan replays only calls of the metadata that passed.
LaunchDescriptor = collections.namedtuple(
    "LaunchDescriptor", [f.name for f in dataclasses.fields(TensorDescriptor)],
    defaults=[f.default for f in dataclasses.fields(TensorDescriptor) if f.default is not dataclasses.MISSING])


def _gl_dtype(dtype: torch.dtype):
    return gl.bfloat16 if dtype == torch.bfloat16 else gl.float16


@functools.lru_cache(maxsize=64)
def _shared_layouts(dtype: torch.dtype, q_block: tuple[int, int],
                    kv_block: tuple[int, int]) -> tuple[gl.NVMMASharedLayout, gl.NVMMASharedLayout]:
    """The TMA tiles' shared layouts (get_default_for costs ~6 us of host time a call)."""
    gdtype = _gl_dtype(dtype)
    return (gl.NVMMASharedLayout.get_default_for(list(q_block), gdtype),
            gl.NVMMASharedLayout.get_default_for(list(kv_block), gdtype))


@functools.lru_cache(maxsize=256)
def compiled_sm90(device: int, dtype: torch.dtype, q_block: tuple[int, int], kv_block: tuple[int, int],
                  key: tuple, consts: tuple) -> launch.Compiled | None:
    """The compiled kernel the Gluon JIT runs on CUDA device `device` for descriptors of
    `dtype` tiles `q_block` / `kv_block`, the other runtime arguments of classes `key`
    (kernels/launch.py) and constexprs `consts` (Sm90Launch's order); None when a JIT
    cache hook took the compile over. Triton specialises a descriptor on its dtype,
    block shape and layout only (shape, strides and base are launch arguments, the
    base always 16-byte aligned), so descriptors over small stand-in tensors of that
    dtype give exactly the kernel a call's own would: its first launch, not only its
    repeats, skips the JIT's binding and key (~100 us a call on the H200 machine)."""
    q_layout, kv_layout = _shared_layouts(dtype, q_block, kv_block)
    where = torch.device("cuda", device)
    descs = [TensorDescriptor(torch.empty(block, dtype=dtype, device=where), list(block), [block[1], 1], list(block),
                              layout) for block, layout in ((q_block, q_layout), (kv_block, kv_layout))]
    # By keyword, as the JIT call takes them: num_warps is a constexpr here and the launch option too.
    return launch.warmed_up(prefill_sm90_kernel, device, (*descs, *launch.stand_ins(key)),
                            dict(zip(_CONST_NAMES, consts)))


class Sm90Launch:
    """One prefill launch with everything but its tensors fixed (the grid, scalars,
    constexprs and TMA layouts of a call's metadata), kept by a PrefillPlan for the
    layers that repeat the call. Every run calls the compiled kernel's launcher
    directly (`compiled_sm90`, kernels/launch.py) with new TMA descriptors for its own
    tensors; the Gluon JIT runs it only where kernels/launch.py leaves launches to the
    JIT (debug modes, an argument its key does not cover, another current device)."""

    __slots__ = ("grid", "scalars", "consts", "q_layout", "kv_layout", "q_block", "kv_block", "q_cols",
                 "kv_rows", "kv_cols", "device", "dtype", "kern")

    def __init__(self, query, kv_cache, block_tables, out, scale: float, max_tiles: int, split: bool = True,
                 turns: bool = False) -> None:
        """`split` / `turns`: the kernel's schedule (see the kernel); paged_prefill runs the
        defaults, the fastest on the H200; the others stay for the probe and the conformance."""
        _, num_heads, head_dim = query.shape
        num_blocks, _, page, num_kv_heads, _ = kv_cache.shape
        rows = min(page, BLOCK_N)
        self.q_block = (BLOCK_M, head_dim)
        self.kv_block = (rows, head_dim)
        self.dtype = query.dtype
        self.q_layout, self.kv_layout = _shared_layouts(self.dtype, self.q_block, self.kv_block)
        self.q_cols = num_heads * head_dim
        self.kv_rows, self.kv_cols = num_blocks * 2 * page, num_kv_heads * head_dim
        self.grid = (max_tiles * num_heads, 1, 1)
        self.scalars = (scale * LOG2E, max_tiles, out.stride(0), out.stride(1), block_tables.stride(0))
        self.consts = (num_heads // num_kv_heads, head_dim, page, rows, BLOCK_M, BLOCK_N, split, split and turns,
                       NUM_WARPS // 2 if split else NUM_WARPS)
        index = query.device.index
        self.device = index if index is not None or not query.is_cuda else torch.cuda.current_device()
        self.kern = None

    def __call__(self, query, kv_cache, block_tables, query_start_loc, context_lens, out, tile_map) -> None:
        """Launch on these tensors: of the metadata it was made for (a PrefillPlan's key
        guarantees it; the compiled kernel found on the first run is kept for the rest)."""
        ptrs = (out, block_tables, query_start_loc, context_lens, tile_map)
        if self.device is not None and launch.jit_modes_off() and launch.current_device() == self.device:
            kern = self.kern
            if kern is None:
                key = launch.arg_classes(_SM90, ptrs, self.scalars)
                if key is not None:
                    kern = self.kern = compiled_sm90(self.device, self.dtype, self.q_block, self.kv_block, key,
                                                     self.consts)
            if kern is not None:
                q_desc = LaunchDescriptor(query, [query.shape[0], self.q_cols], [query.stride(0), 1],
                                          list(self.q_block), self.q_layout)
                kv_desc = LaunchDescriptor(kv_cache, [self.kv_rows, self.kv_cols], [kv_cache.stride(2), 1],
                                           list(self.kv_block), self.kv_layout)
                launch.run_compiled(kern, self.grid, self.device, (q_desc, kv_desc, *ptrs), self.scalars, self.consts)
                return
        q_desc = TensorDescriptor(query, [query.shape[0], self.q_cols], [query.stride(0), 1], list(self.q_block),
                                  self.q_layout)
        kv_desc = TensorDescriptor(kv_cache, [self.kv_rows, self.kv_cols], [kv_cache.stride(2), 1],
                                   list(self.kv_block), self.kv_layout)
        prefill_sm90_kernel[self.grid[:1]](q_desc, kv_desc, *ptrs, *self.scalars, **dict(zip(_CONST_NAMES,
                                                                                               self.consts)))


# The constexprs in Sm90Launch.consts' order, passed by keyword (num_warps is a launch option too).
_CONST_NAMES = ("GROUP", "HEAD_DIM", "PAGE", "ROWS", "BLOCK_M", "BLOCK_N", "SPLIT", "TURNS", "num_warps")
# Only a cache key for launch.arg_classes (the kernel's scalar classes); launches go through Sm90Launch.
_SM90 = launch.Kernel(prefill_sm90_kernel, *_CONST_NAMES)
