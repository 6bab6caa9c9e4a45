"""Split-K partials of paged_decode in one buffer that a caller can keep between calls.

A split launch needs, per (sequence, query head, split), a float32 running max,
a running sum and a head_dim_pad accumulator. They live in one flat buffer
(three aligned slices, no shaped views: the kernels take explicit strides), so
a call allocates once, or not at all with a workspace that already fits.

Reuse is safe in stream order: on one stream a call's reduce has read the
partials before the next call's attention pass writes them. A workspace is not
for calls running concurrently on several streams. A buffer it outgrew is kept
alive, not freed: a CUDA graph captured over an earlier call still points there.
"""
from __future__ import annotations

import torch

_ALIGN = 64          # floats: every slice starts on a 256-byte boundary


class DecodeWorkspace:
    """Caller-owned split-K scratch for `paged_decode(..., workspace=)`."""

    def __init__(self) -> None:
        self._buffer: torch.Tensor | None = None
        self._outgrown: list[torch.Tensor] = []
        self._last: tuple[int, int, torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None

    def partials(self, n: int, head_dim_pad: int,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(max, sum, accumulator) slices for `n` = sequences x query heads x splits."""
        last = self._last
        if last is not None and last[0] == n and last[1] == head_dim_pad and last[2] == device:
            return last[3]
        stride = -(-n // _ALIGN) * _ALIGN
        need = stride * 2 + n * head_dim_pad
        buf = self._buffer
        if buf is None or buf.numel() < need or buf.device != device:
            if buf is not None:
                self._outgrown.append(buf)
            size = need if buf is None or buf.device != device else max(need, 2 * buf.numel())
            buf = self._buffer = torch.empty(size, dtype=torch.float32, device=device)
        views = (buf[:n], buf[stride:stride + n], buf[2 * stride:2 * stride + n * head_dim_pad])
        self._last = (n, head_dim_pad, device, views)
        return views


def scratch_partials(workspace: DecodeWorkspace | None, n: int, head_dim_pad: int,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The partials from `workspace`, or from a buffer allocated for this call alone."""
    return (workspace if workspace is not None else DecodeWorkspace()).partials(n, head_dim_pad, device)
