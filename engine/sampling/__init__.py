"""Sampling: SamplingParams (plain data, no torch) and the batched sampler (torch).

`import engine.sampling.sampling_params` (or SamplingParams from here) must not load
torch, so the torch-side names are imported on first use.
"""
from __future__ import annotations

from typing import Any

from engine.sampling.sampling_params import SamplingParams, SamplingType

# name -> module that defines it; loaded lazily (they import torch).
_TORCH_NAMES = {
    "Sampler": "engine.sampling.sampler",
    "SamplerOutput": "engine.sampling.sampler",
    "SamplingRow": "engine.sampling.sampler",
    "make_generator": "engine.sampling.sampler",
    "TokenLogprobs": "engine.sampling.logprobs",
    "compute_logprobs": "engine.sampling.logprobs",
}

__all__ = ["SamplingParams", "SamplingType", *_TORCH_NAMES]


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:
        import importlib
        return getattr(importlib.import_module(_TORCH_NAMES[name]), name)
    raise AttributeError(f"module 'engine.sampling' has no attribute {name!r}")
