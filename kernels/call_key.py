"""The metadata key of a launcher call, for the launch plans its repeats reuse.

An engine calls paged_decode and paged_prefill from every layer of every step
with tensors that are new objects but have the same metadata. Everything the
checked path works out (checks, config, strides, specialisation key, compiled
kernel) is a function of that metadata and the call's other arguments, so a plan
keyed by `call_key` can be replayed with new tensors (kernels/decode_plan.py,
kernels/prefill_plan.py). Data pointers stay out of the key (they change every
call) except their 16-byte alignment, which picks the compiled kernel.

No check is weakened: the key holds every input a check reads (each tensor's
exact type, shape, strides, dtype, device and alignment; the options and the
type of each, since 1 == 1.0 == True), and a plan is stored only after the full
path passed with that key. Any difference is a miss, and a miss is the full
path, which raises what it always raised.
"""
from __future__ import annotations

import torch


def call_key(tensors: tuple, options: tuple) -> tuple | None:
    """The key of a call with these tensor arguments (None for an optional one left
    out) and other arguments `options`; None when an argument is not a plain
    tensor (the full path says what is wrong). This is most of a repeat call's host
    time: one comprehension, no per-tensor function call."""
    tensor = torch.Tensor
    for t in tensors:
        if t is not None and type(t) is not tensor:
            return None
    try:
        return (tuple([None if t is None else (t.size(), t.stride(), t.dtype, t.device, t.data_ptr() & 15)
                       for t in tensors]), options, tuple(map(type, options)))
    except RuntimeError:                 # a strideless (sparse, nested) tensor: the full path's business
        return None
