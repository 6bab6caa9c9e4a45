"""Programmatic dependent launch (sm_90 and later) for the split-K reduce.

Launched with PDL, the reduce kernel's programs start while the attention pass
drains instead of after it; each waits in-kernel (`griddepcontrol.wait`) until
the pass has finished and its partials are visible, so the result is the same
and only the gap between the two launches goes. The attention pass signals
(`griddepcontrol.launch_dependents`) once its loop is done.
"""
from __future__ import annotations

import functools

import torch

from kernels.triton_compat import is_interpreting

try:                                   # Triton >= 3.3; both calls are no-ops without PDL
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:                    # an older Triton: the launcher never asks for PDL
    gdc_launch_dependents = gdc_wait = None

__all__ = ["gdc_launch_dependents", "gdc_wait", "use_pdl"]


@functools.cache
def capability(index: int) -> tuple[int, int]:
    """Compute capability of CUDA device `index`, asked once (kernels/prefill_route.py asks too)."""
    return torch.cuda.get_device_capability(index)


def use_pdl(device: torch.device, requested: bool | None, interpreting: bool | None = None) -> bool:
    """Whether to launch the reduce with PDL: `requested` (None = wherever it
    works: compiled CUDA code on compute capability 9.0 or later). `interpreting`
    spares the launcher a second read of TRITON_INTERPRET."""
    if interpreting is None:
        interpreting = is_interpreting()
    available = (not interpreting and gdc_wait is not None and device.type == "cuda"
                 and capability(torch.cuda.current_device() if device.index is None else device.index)[0] >= 9)
    if requested and not available:
        raise ValueError(f"pdl=True needs compiled Triton on a CUDA device of compute capability >= 9.0 "
                         f"with griddepcontrol support; here: {device}"
                         f"{', Triton interpreter' if interpreting else ''}")
    return available if requested is None else bool(requested)
