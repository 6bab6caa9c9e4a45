"""OPT decoder: learned positions (offset 2), LayerNorm before or after each block
as `do_layer_norm_before` says, ReLU MLP, biases, optional project_in/out when
word_embed_proj_dim differs from hidden_size, lm_head tied to the embeddings.

Parameter names follow HF's `OPTForCausalLM` except the fused `qkv_proj` (q|k|v).
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig

from engine.attention.backend import AttentionBackend
from engine.attention.metadata import AttentionMetadata
from engine.model_executor.layers import LayerNorm, Linear, PackedGemm, ReLU, ShardedLinear
from engine.model_executor.models.loading import load_checkpoint

POSITION_OFFSET = 2   # OPT's learned position table starts two rows in


class OPTAttention(nn.Module):
    def __init__(self, config: PretrainedConfig, backend: AttentionBackend) -> None:
        super().__init__()
        hidden, bias = config.hidden_size, bool(getattr(config, "enable_bias", True))
        self.num_heads = config.num_attention_heads
        self.head_dim = hidden // self.num_heads
        self.qkv_proj = ShardedLinear(hidden, [("q_proj", hidden), ("k_proj", hidden), ("v_proj", hidden)],
                                      bias=bias)
        self.out_proj = Linear(hidden, hidden, bias=bias)
        self.backend = backend
        self.scale = self.head_dim ** -0.5

    def forward(self, hidden: torch.Tensor, kv_cache: torch.Tensor, kv_scales: torch.Tensor | None,
                metadata: AttentionMetadata) -> torch.Tensor:
        t = hidden.shape[0]
        q, k, v = (x.view(t, self.num_heads, self.head_dim)
                   for x in self.qkv_proj.split(self.qkv_proj(hidden)))
        out = self.backend.forward(q, k, v, kv_cache, kv_scales, metadata, self.scale)
        return self.out_proj(out.reshape(t, self.num_heads * self.head_dim))


class OPTDecoderLayer(nn.Module):
    def __init__(self, config: PretrainedConfig, backend: AttentionBackend) -> None:
        super().__init__()
        hidden, bias = config.hidden_size, bool(getattr(config, "enable_bias", True))
        affine = bool(getattr(config, "layer_norm_elementwise_affine", True))
        self.pre_norm = bool(config.do_layer_norm_before)
        self.self_attn = OPTAttention(config, backend)
        self.self_attn_layer_norm = LayerNorm(hidden, elementwise_affine=affine)
        self.fc1 = Linear(hidden, config.ffn_dim, bias=bias)
        self.act = ReLU()
        self.fc2 = Linear(config.ffn_dim, hidden, bias=bias)
        self.final_layer_norm = LayerNorm(hidden, elementwise_affine=affine)

    def forward(self, hidden: torch.Tensor, kv_cache: torch.Tensor, kv_scales: torch.Tensor | None,
                metadata: AttentionMetadata) -> torch.Tensor:
        x = self.self_attn_layer_norm(hidden) if self.pre_norm else hidden
        hidden = hidden + self.self_attn(x, kv_cache, kv_scales, metadata)
        if not self.pre_norm:
            hidden = self.self_attn_layer_norm(hidden)
        x = self.final_layer_norm(hidden) if self.pre_norm else hidden
        hidden = hidden + self.fc2(self.act(self.fc1(x)))
        return hidden if self.pre_norm else self.final_layer_norm(hidden)


class OPTDecoder(nn.Module):
    def __init__(self, config: PretrainedConfig, backend: AttentionBackend) -> None:
        super().__init__()
        hidden, proj = config.hidden_size, config.word_embed_proj_dim
        self.embed_tokens = nn.Embedding(config.vocab_size, proj)
        self.embed_positions = nn.Embedding(config.max_position_embeddings + POSITION_OFFSET, hidden)
        self.project_in = Linear(proj, hidden, bias=False) if proj != hidden else None
        self.project_out = Linear(hidden, proj, bias=False) if proj != hidden else None
        final = config.do_layer_norm_before and not getattr(config, "_remove_final_layer_norm", False)
        affine = bool(getattr(config, "layer_norm_elementwise_affine", True))
        self.final_layer_norm = LayerNorm(hidden, elementwise_affine=affine) if final else None
        self.layers = nn.ModuleList(OPTDecoderLayer(config, backend) for _ in range(config.num_hidden_layers))


class OPTModel(nn.Module):
    def __init__(self, config: PretrainedConfig, backend: AttentionBackend) -> None:
        super().__init__()
        self.decoder = OPTDecoder(config, backend)


class OPTForCausalLM(nn.Module):
    def __init__(self, config: PretrainedConfig, backend: AttentionBackend) -> None:
        super().__init__()
        if config.hidden_size % config.num_attention_heads:
            raise ValueError(f"hidden_size {config.hidden_size} is not a multiple of "
                             f"num_attention_heads {config.num_attention_heads}")
        act = getattr(config, "activation_function", "relu")
        if act != "relu":
            raise ValueError(f"activation_function must be 'relu' for OPT, got {act!r}")
        self.config = config
        self.num_layers = config.num_hidden_layers
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.vocab_size = config.vocab_size
        self.sliding_window = None
        self.tie_word_embeddings = bool(getattr(config, "tie_word_embeddings", True))
        self.model = OPTModel(config, backend)
        if not self.tie_word_embeddings:
            self.lm_head = Linear(config.word_embed_proj_dim, config.vocab_size, bias=False)
        self.head_gemm: PackedGemm | None = None
        self.requires_grad_(False)     # inference only: no autograd graph through the KV cache

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, kv_caches: list[torch.Tensor],
                kv_scales: list[torch.Tensor | None], metadata: AttentionMetadata) -> torch.Tensor:
        """Flat tokens [T] -> the lm_head's input [T, word_embed_proj_dim] (= hidden
        unless the model projects out)."""
        dec = self.model.decoder
        hidden = dec.embed_tokens(input_ids)
        if dec.project_in is not None:
            hidden = dec.project_in(hidden)
        hidden = hidden + dec.embed_positions(positions + POSITION_OFFSET)
        for layer, cache, scales in zip(dec.layers, kv_caches, kv_scales, strict=True):
            hidden = layer(hidden, cache, scales, metadata)
        if dec.final_layer_norm is not None:
            hidden = dec.final_layer_norm(hidden)
        if dec.project_out is not None:
            hidden = dec.project_out(hidden)
        return hidden

    def logits_weight(self) -> torch.Tensor:
        """The logits head's [vocab, hidden] weight (the embedding's when tied)."""
        return self.model.decoder.embed_tokens.weight if self.tie_word_embeddings else self.lm_head.weight

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Rows [N, word_embed_proj_dim] (the sampling rows only) -> float32 logits [N, vocab]."""
        if self.head_gemm is not None:        # set by pack_gemms (CPU float32)
            return self.head_gemm(hidden).float()
        return F.linear(hidden, self.logits_weight()).float()

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Tensors under HF `OPTForCausalLM` names (hub checkpoints' bare "decoder."
        prefix accepted too), copied in place."""
        tied = {"lm_head.weight": "model.decoder.embed_tokens.weight"} if self.tie_word_embeddings else None
        load_checkpoint(self, weights, tied=tied,
                        rename=lambda name: f"model.{name}" if name.startswith("decoder.") else name)
