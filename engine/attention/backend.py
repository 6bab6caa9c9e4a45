"""The attention backend interface: one object per engine, called by every layer.

A backend writes the step's new K/V rows into the layer's paged cache, then
attends each query token over its sequence's context (causal within the tokens
computed this step, full over the cached prefix). Both backends read and write
the same cache layout, `[num_blocks, 2, block_size, num_kv_heads, head_dim]`
(docs/architecture.md, "KV cache contract").
"""
from __future__ import annotations

import abc

import torch

from engine.attention.metadata import AttentionMetadata

BACKEND_NAMES = ("torch", "triton")


class AttentionBackend(abc.ABC):
    name: str

    @abc.abstractmethod
    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                kv_cache: torch.Tensor, kv_scales: torch.Tensor | None,
                metadata: AttentionMetadata, scale: float) -> torch.Tensor:
        """query [num_tokens, num_heads, head_dim]; key/value [num_tokens,
        num_kv_heads, head_dim] (this step's new rows, in the metadata's token
        order). Writes key/value into kv_cache (and kv_scales for fp8/int8
        caches) at metadata.slot_mapping, then returns the attention output
        [num_tokens, num_heads, head_dim] in the query's dtype."""


def get_attention_backend(name: str) -> AttentionBackend:
    """The backend called `name` ("torch" or "triton")."""
    if name == "torch":
        from engine.attention.torch_backend import TorchBackend
        return TorchBackend()
    if name == "triton":
        from engine.attention.triton_backend import TritonBackend
        return TritonBackend()
    raise ValueError(f"attention backend must be one of {BACKEND_NAMES}, got {name!r}")
