"""Llama-family decoder (Llama 2/3, SmolLM2, Mistral-style): RMSNorm, RoPE, GQA,
SwiGLU, tied or untied embeddings, over a flat batch of tokens and a paged cache.

Parameter names follow HF's `LlamaForCausalLM` except the fused projections
(`qkv_proj` = q|k|v, `gate_up_proj` = gate|up), so checkpoints load by name.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig

from engine.attention.backend import AttentionBackend
from engine.attention.metadata import AttentionMetadata
from engine.model_executor.layers import (Linear, PackedGemm, RMSNorm, ShardedLinear, SiluAndMul, apply_rotary,
                                          rotary_from_config)
from engine.model_executor.models.loading import load_checkpoint


class LlamaAttention(nn.Module):
    def __init__(self, config: PretrainedConfig, backend: AttentionBackend, head_dim: int) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads or self.num_heads
        self.head_dim = head_dim
        bias = bool(getattr(config, "attention_bias", False))
        q_size, kv_size = self.num_heads * head_dim, self.num_kv_heads * head_dim
        self.qkv_proj = ShardedLinear(config.hidden_size, [("q_proj", q_size), ("k_proj", kv_size),
                                                           ("v_proj", kv_size)], bias=bias)
        self.o_proj = Linear(q_size, config.hidden_size, bias=bias)
        self.qk_size = q_size + kv_size
        self.backend = backend
        self.scale = head_dim ** -0.5

    def forward(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                kv_cache: torch.Tensor, kv_scales: torch.Tensor | None,
                metadata: AttentionMetadata) -> torch.Tensor:
        t = hidden.shape[0]
        qkv = self.qkv_proj(hidden)
        # q and k sit side by side in the fused output: one rotary pass for both.
        qk = apply_rotary(qkv[:, :self.qk_size].view(t, -1, self.head_dim), cos, sin)
        q, k = qk.split((self.num_heads, self.num_kv_heads), dim=1)
        v = qkv[:, self.qk_size:].view(t, self.num_kv_heads, self.head_dim)
        out = self.backend.forward(q, k, v, kv_cache, kv_scales, metadata, self.scale)
        return self.o_proj(out.reshape(t, self.num_heads * self.head_dim))


class LlamaMLP(nn.Module):
    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        act = getattr(config, "hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"hidden_act must be 'silu' for a Llama-family model, got {act!r}")
        bias = bool(getattr(config, "mlp_bias", False))
        size = config.intermediate_size
        self.gate_up_proj = ShardedLinear(config.hidden_size, [("gate_proj", size), ("up_proj", size)],
                                          bias=bias)
        self.act = SiluAndMul()
        self.down_proj = Linear(size, config.hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_up_proj(x)))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: PretrainedConfig, backend: AttentionBackend, head_dim: int) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(config, backend, head_dim)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                kv_cache: torch.Tensor, kv_scales: torch.Tensor | None,
                metadata: AttentionMetadata) -> torch.Tensor:
        hidden = hidden + self.self_attn(self.input_layernorm(hidden), cos, sin, kv_cache, kv_scales, metadata)
        return hidden + self.mlp(self.post_attention_layernorm(hidden))


class LlamaModel(nn.Module):
    def __init__(self, config: PretrainedConfig, backend: AttentionBackend, head_dim: int) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, backend, head_dim)
                                    for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    """Llama / Mistral-style causal LM. `sliding_window` (Mistral) is not applied:
    the runner must keep contexts within it (it is exposed for that)."""

    def __init__(self, config: PretrainedConfig, backend: AttentionBackend) -> None:
        super().__init__()
        if config.hidden_size % config.num_attention_heads and not getattr(config, "head_dim", None):
            raise ValueError(f"hidden_size {config.hidden_size} is not a multiple of "
                             f"num_attention_heads {config.num_attention_heads}")
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        num_kv_heads = config.num_key_value_heads or config.num_attention_heads
        if config.num_attention_heads % num_kv_heads:
            raise ValueError(f"num_attention_heads {config.num_attention_heads} is not a multiple of "
                             f"num_key_value_heads {num_kv_heads}")
        self.config = config
        self.num_layers = config.num_hidden_layers
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.vocab_size = config.vocab_size
        self.sliding_window = getattr(config, "sliding_window", None)
        self.tie_word_embeddings = bool(getattr(config, "tie_word_embeddings", False))
        self.model = LlamaModel(config, backend, head_dim)
        self.rotary_emb = rotary_from_config(config, head_dim)
        if not self.tie_word_embeddings:
            self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        self.head_gemm: PackedGemm | None = None
        self.requires_grad_(False)     # inference only: no autograd graph through the KV cache

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, kv_caches: list[torch.Tensor],
                kv_scales: list[torch.Tensor | None], metadata: AttentionMetadata) -> torch.Tensor:
        """Flat tokens [T] -> final hidden states [T, hidden] (the lm_head's input)."""
        cos, sin = self.rotary_emb.cos_sin(positions)
        hidden = self.model.embed_tokens(input_ids)
        for layer, cache, scales in zip(self.model.layers, kv_caches, kv_scales, strict=True):
            hidden = layer(hidden, cos, sin, cache, scales, metadata)
        return self.model.norm(hidden)

    def logits_weight(self) -> torch.Tensor:
        """The logits head's [vocab, hidden] weight (the embedding's when tied)."""
        return self.model.embed_tokens.weight if self.tie_word_embeddings else self.lm_head.weight

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Rows [N, hidden] (the sampling rows only) -> float32 logits [N, vocab]."""
        if self.head_gemm is not None:        # set by pack_gemms (CPU float32)
            return self.head_gemm(hidden).float()
        return F.linear(hidden, self.logits_weight()).float()

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Tensors under HF `LlamaForCausalLM` names, copied in place."""
        tied = {"lm_head.weight": "model.embed_tokens.weight"} if self.tie_word_embeddings else None
        load_checkpoint(self, weights, tied=tied, ignore=lambda name: name.endswith("rotary_emb.inv_freq"))
