"""copy_blocks: copy-on-write block copies inside device caches, one Triton launch per group.

Every tensor in `kv_caches` has the block dim first (per-layer KV caches, their
kv_scales); row `dst` of each becomes a copy of row `src`. Tensors that are
evenly spaced views of one buffer with the same shape, strides and dtype (the
per-layer views of an engine-wide cache) share one launch: the kernel walks the
layers with a pointer stride. Others get a launch each.

Copies are bitwise (rows are moved as same-width integers), so NaN payloads and
fp8/int8 bytes survive unchanged.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kernels.triton_compat import is_interpreting
from kernels.validation import bit_copy_dtype, check_block_mapping, check_device_runs_triton

_CHUNK = 2048


@triton.jit
def _copy_rows_kernel(base_ptr, pairs_ptr, layer_stride, block_stride, row_numel, BLOCK: tl.constexpr):
    pair = tl.program_id(0)
    layer = tl.program_id(1)
    src = tl.load(pairs_ptr + 2 * pair)          # int64: block * stride cannot overflow
    dst = tl.load(pairs_ptr + 2 * pair + 1)
    base = base_ptr + layer.to(tl.int64) * layer_stride
    src_row = base + src * block_stride
    dst_row = base + dst * block_stride
    for start in range(0, row_numel, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < row_numel
        tl.store(dst_row + offs, tl.load(src_row + offs, mask=mask), mask=mask)


def _check_caches(kv_caches: object) -> list[torch.Tensor]:
    if not isinstance(kv_caches, (list, tuple)):
        raise ValueError(f"kv_caches must be a list of tensors, got {type(kv_caches).__name__}")
    caches = list(kv_caches)
    for i, t in enumerate(caches):
        if not isinstance(t, torch.Tensor) or t.dim() < 1:
            raise ValueError(f"kv_caches[{i}] must be a tensor with a block dim first")
        if t.device != caches[0].device:
            raise ValueError(f"kv_caches[{i}] is on {t.device}, kv_caches[0] on {caches[0].device}")
        if t.shape[0] != caches[0].shape[0]:
            raise ValueError(f"kv_caches[{i}] has {t.shape[0]} blocks, kv_caches[0] has {caches[0].shape[0]}")
        bit_copy_dtype(f"kv_caches[{i}]", t)
        if not t[0].is_contiguous():
            raise ValueError(f"kv_caches[{i}] rows (everything after the block dim) must be contiguous")
    return caches


def _groups(caches: list[torch.Tensor]) -> list[tuple[torch.Tensor, int, int]]:
    """(first tensor as ints, count, layer stride in elements) for runs of evenly spaced alike tensors."""
    out: list[tuple[torch.Tensor, int, int]] = []
    for t in caches:
        t = t.view(bit_copy_dtype("kv_caches", t))
        if out:
            first, count, step = out[-1]
            alike = (t.dtype, t.shape, t.stride()) == (first.dtype, first.shape, first.stride())
            gap, rem = divmod(t.data_ptr() - first.data_ptr(), t.element_size())
            if alike and rem == 0 and gap != 0 and (count == 1 or gap == count * step):
                out[-1] = (first, count + 1, gap if count == 1 else step)
                continue
        out.append((t, 1, 0))
    return out


def copy_blocks(kv_caches: list[torch.Tensor], src_to_dst: torch.Tensor) -> None:
    """For every tensor in `kv_caches` (same device, same number of blocks, rows
    contiguous), copy row src to row dst for each pair of `src_to_dst` (int64 [n, 2]).
    No destination may be a source or repeat, so the copies are order-free. Runs on
    the current stream and returns without waiting."""
    caches = _check_caches(kv_caches)
    if not caches:
        return
    check_device_runs_triton("kv_caches[0]", caches[0], "copy_blocks", is_interpreting())
    num_blocks = caches[0].shape[0]
    check_block_mapping("src_to_dst", src_to_dst, num_blocks, num_blocks, "the caches", "the caches", disjoint=True)
    n = src_to_dst.shape[0]
    if n == 0:
        return
    pairs = src_to_dst.to(caches[0].device, non_blocking=True).contiguous()
    for first, count, step in _groups(caches):
        row_numel = math.prod(first.shape[1:])
        if row_numel == 0:
            continue
        block = min(_CHUNK, triton.next_power_of_2(row_numel))
        _copy_rows_kernel[(n, count)](first, pairs, step, first.stride(0), row_numel, BLOCK=block,
                                      num_warps=4)
