"""swap_blocks: move cache blocks between devices (GPU <-> CPU) in one batched transfer.

Three steps, whatever the number of blocks: one `index_select` gathers the
source rows on the source device, one copy moves them across (through pinned
host memory when a GPU is involved, so the copy is a true async DMA), one
`index_copy_` scatters them into the destination. Rows move as same-width
integers, so the copy is bitwise (fp8/int8 bytes, NaN payloads).

Stream/synchronisation contract: all GPU work runs on the current stream of the
GPU involved. With `non_blocking=False` (the default) the call returns after the
copy is complete: the destination may be read from any stream, and the source
blocks may be overwritten. With `non_blocking=True`:
- CPU -> GPU returns once the work is queued; the destination is ready in stream
  order on the current stream, and the CPU source may be overwritten at once
  (the rows were gathered into a staging buffer that the caching host allocator
  keeps alive until the copy has run).
- GPU -> CPU must scatter into CPU memory after the transfer, so it always
  waits for the copy (non_blocking changes nothing there).
"""
from __future__ import annotations

import torch

from kernels.validation import bit_copy_dtype, check_block_mapping


def _check(src: object, dst: object, mapping: object) -> tuple[torch.Tensor, torch.Tensor]:
    for name, t in (("src", src), ("dst", dst)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if src.dtype != dst.dtype:
        raise ValueError(f"dst dtype {dst.dtype} differs from src dtype {src.dtype}")
    if src.dim() < 1 or src.shape[1:] != dst.shape[1:] or src.dim() != dst.dim():
        raise ValueError(f"dst shape {tuple(dst.shape)} must match src shape {tuple(src.shape)} except dim 0")
    bit_copy_dtype("src", src)
    pairs = check_block_mapping("mapping", mapping, src.shape[0], dst.shape[0], "src", "dst", disjoint=False)
    src_ids, dst_ids = pairs[:, 0], pairs[:, 1]
    return src_ids, dst_ids


def swap_blocks(src: torch.Tensor, dst: torch.Tensor, mapping: torch.Tensor,
                non_blocking: bool = False) -> None:
    """dst[mapping[i, 1]] = src[mapping[i, 0]] for every row of `mapping` (int64 [n, 2]);
    `src` and `dst` share dtype and shape past dim 0 and may live on different
    devices. See the module docstring for when the copy is complete."""
    src_ids, dst_ids = _check(src, dst, mapping)
    if src_ids.numel() == 0:
        return
    ints = bit_copy_dtype("src", src)
    src_i, dst_i = src.view(ints), dst.view(ints)
    rows_shape = (src_ids.numel(),) + tuple(src.shape[1:])
    cuda_involved = src.device.type == "cuda" or dst.device.type == "cuda"
    if src.device.type == "cpu":
        # Gather straight into (pinned) staging, then one host-to-device copy.
        staging = torch.empty(rows_shape, dtype=ints, pin_memory=cuda_involved)
        torch.index_select(src_i, 0, src_ids, out=staging)
        rows = staging.to(dst.device, non_blocking=True)
    else:
        gathered = src_i.index_select(0, src_ids.to(src.device, non_blocking=True))
        if dst.device.type == "cpu":
            staging = torch.empty(rows_shape, dtype=ints, pin_memory=True)
            staging.copy_(gathered, non_blocking=True)
            torch.cuda.current_stream(src.device).synchronize()  # the CPU scatter reads it next
            rows = staging
        else:
            rows = gathered.to(dst.device, non_blocking=True)
    dst_i.index_copy_(0, dst_ids.to(dst.device, non_blocking=True), rows)
    if cuda_involved and not non_blocking and dst.device.type == "cuda":
        torch.cuda.current_stream(dst.device).synchronize()
