"""Activations of the MLPs: SwiGLU's SiLU-and-multiply over a fused gate/up output, ReLU."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ReLU = nn.ReLU


class SiluAndMul(nn.Module):
    """x [..., 2 * I] = [gate | up] -> silu(gate) * up [..., I]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = x.chunk(2, dim=-1)
        return F.silu(gate) * up
