"""Split-K partials of paged_decode in one buffer that a caller can keep between calls.

A split launch needs, per (sequence, query head, split), a float32 running max,
a running sum and a head_dim_pad accumulator. They live in one flat buffer
(three aligned slices, no shaped views: the kernels take explicit strides), so
a call allocates once, or not at all with a workspace that already fits.

The fused merge also needs one int32 ticket counter per (sequence, KV head),
zeroed once and reset to zero by the kernel that used it.

Reuse is safe in stream order: on one stream a call's merge has read the
partials (and reset its tickets) before the next call's attention pass writes them. A workspace is not
for calls running concurrently on several streams. A buffer it outgrew is kept
alive, not freed: a CUDA graph captured over an earlier call still points there.

A workspace also keeps the launch plans of its calls (kernels/decode_plan.py):
a repeat call with the same tensors' metadata skips straight to its launches.
"""
from __future__ import annotations

import torch

from kernels.decode_plan import DecodePlans

_ALIGN = 64          # floats: every slice starts on a 256-byte boundary


class DecodeWorkspace:
    """Caller-owned split-K scratch and launch plans for `paged_decode(..., workspace=)`."""

    def __init__(self) -> None:
        self.plans = DecodePlans()
        self._buffer: torch.Tensor | None = None
        self._tickets: torch.Tensor | None = None
        self._outgrown: list[torch.Tensor] = []
        self._last: tuple[int, int, torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
        self._last_tickets: tuple[int, torch.device, torch.Tensor] | None = None

    def _fitting(self, buf: torch.Tensor | None, need: int, dtype: torch.dtype, device: torch.device,
                 zeroed: bool) -> torch.Tensor:
        """`buf` if it holds `need` elements on `device`, else a new one (zeroed if
        asked; at least twice as large when growing); the outgrown one stays referenced."""
        if buf is not None and buf.numel() >= need and buf.device == device:
            return buf
        if buf is not None:
            self._outgrown.append(buf)
        size = need if buf is None or buf.device != device else max(need, 2 * buf.numel())
        return (torch.zeros if zeroed else torch.empty)(size, dtype=dtype, device=device)

    def tickets(self, n: int, device: torch.device) -> torch.Tensor:
        """`n` int32 ticket counters (one per sequence x KV head) for the fused
        split-K merge: zero when handed out, and zero again after every call that
        used them (the merging program resets its counter)."""
        last = self._last_tickets
        if last is not None and last[0] == n and last[1] == device:
            return last[2]
        buf = self._tickets = self._fitting(self._tickets, n, torch.int32, device, zeroed=True)
        view = buf[:n]
        self._last_tickets = (n, device, view)
        return view

    def partials(self, n: int, head_dim_pad: int,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(max, sum, accumulator) slices for `n` = sequences x query heads x splits."""
        last = self._last
        if last is not None and last[0] == n and last[1] == head_dim_pad and last[2] == device:
            return last[3]
        stride = -(-n // _ALIGN) * _ALIGN
        need = stride * 2 + n * head_dim_pad
        buf = self._buffer = self._fitting(self._buffer, need, torch.float32, device, zeroed=False)
        views = (buf[:n], buf[stride:stride + n], buf[2 * stride:2 * stride + n * head_dim_pad])
        self._last = (n, head_dim_pad, device, views)
        return views


def scratch_partials(workspace: DecodeWorkspace | None, n: int, head_dim_pad: int, tickets: int,
                     device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(max, sum, accumulator, tickets) from `workspace`, or from buffers allocated
    for this call alone; `tickets` counters (None for 0: the separate reduce)."""
    ws = workspace if workspace is not None else DecodeWorkspace()
    return (*ws.partials(n, head_dim_pad, device), ws.tickets(tickets, device) if tickets else None)
