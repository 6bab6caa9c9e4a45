"""Rotary position embedding, neox style (HF Llama's rotate_half): the two halves
of each head are rotated as pairs (x[i], x[i + D/2]).

The cos/sin table of every position is built once, in float32 (the model's
`.to(dtype)` casts it as HF casts its cos/sin to the activations' dtype), and a
forward indexes it by the step's positions once for all layers.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

ROPE_TYPES = ("default", "linear", "llama3")


def _llama3_inv_freq(inv_freq: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """Llama 3.1's frequency scaling: long wavelengths slowed by `factor`, short
    ones kept, the band between blended linearly in 1 / wavelength."""
    try:
        factor = float(params["factor"])
        low = float(params["low_freq_factor"])
        high = float(params["high_freq_factor"])
        original = float(params["original_max_position_embeddings"])
    except KeyError as err:
        raise ValueError(f"llama3 rope scaling needs {err.args[0]!r}, got {params}") from None
    if not high > low:
        raise ValueError(f"llama3 rope scaling needs high_freq_factor > low_freq_factor, got {params}")
    wavelen = 2 * math.pi / inv_freq
    blend = (original / wavelen - low) / (high - low)
    medium = (1 - blend) * inv_freq / factor + blend * inv_freq
    slow = torch.where(wavelen > original / low, inv_freq / factor, medium)
    return torch.where(wavelen < original / high, inv_freq, slow)


class RotaryEmbedding(nn.Module):
    def __init__(self, head_dim: int, max_position: int, base: float = 10000.0,
                 scaling: dict[str, Any] | None = None) -> None:
        super().__init__()
        if head_dim < 2 or head_dim % 2:
            raise ValueError(f"head_dim must be even and >= 2, got {head_dim}")
        if max_position < 1:
            raise ValueError(f"max_position must be >= 1, got {max_position}")
        if not base > 0:
            raise ValueError(f"base (rope_theta) must be > 0, got {base}")
        rope_type = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
        if rope_type not in ROPE_TYPES:
            raise ValueError(f"rope_type must be one of {ROPE_TYPES}, got {rope_type!r}")
        exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
        inv_freq = 1.0 / (base ** exponents)
        if rope_type == "linear":
            inv_freq = inv_freq / float(scaling["factor"])
        elif rope_type == "llama3":
            inv_freq = _llama3_inv_freq(inv_freq, scaling)
        freqs = torch.arange(max_position, dtype=torch.float32).unsqueeze(1) * inv_freq
        # [max_position, D]: cos of the D/2 frequencies, then their sin.
        self.register_buffer("cos_sin_cache", torch.cat((freqs.cos(), freqs.sin()), dim=-1),
                             persistent=False)
        self.head_dim = head_dim
        self.max_position = max_position

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [T, 1, D/2] of the positions (one row per token, broadcast over heads)."""
        table = self.cos_sin_cache.index_select(0, positions).unsqueeze(1)
        cos, sin = table.chunk(2, dim=-1)
        return cos, sin


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, H, D] rotated: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin), halves of D."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def rope_settings(config: Any) -> tuple[float, dict[str, Any] | None]:
    """(rope_theta, scaling parameters or None) from a transformers config: the v5
    `rope_parameters` dict, or the older `rope_theta` + `rope_scaling` fields."""
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and params:
        theta = params.get("rope_theta", getattr(config, "rope_theta", 10000.0))
        scaling = params
    else:
        theta = getattr(config, "rope_theta", None) or 10000.0
        scaling = getattr(config, "rope_scaling", None)
    factor = (scaling or {}).get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0))
    if factor not in (None, 1.0):
        raise ValueError(f"partial_rotary_factor must be 1.0 (all of head_dim rotated), got {factor}")
    return float(theta), scaling


def rotary_from_config(config: Any, head_dim: int) -> RotaryEmbedding:
    theta, scaling = rope_settings(config)
    return RotaryEmbedding(head_dim, config.max_position_embeddings, theta, scaling)
