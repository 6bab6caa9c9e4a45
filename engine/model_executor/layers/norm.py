"""Normalisation layers. RMSNorm computes in float32 and casts back before the
weight, as HF Llama does, so half-precision models round where HF rounds."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LayerNorm = nn.LayerNorm   # OPT's pre/post norms: torch's own is the reference


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        if hidden_size < 1:
            raise ValueError(f"hidden_size must be >= 1, got {hidden_size}")
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps}")
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = F.rms_norm(x.float(), self.weight.shape, eps=self.eps)    # one fused op
        return self.weight * normed.to(x.dtype)
