"""Model shapes: what the memory math needs from a model, from presets or an HF config.

No torch: the calculator and the block manager's sizing read shapes without
loading weights. Two families are understood, like the engine: Llama-style
(Llama, SmolLM, Mistral) and OPT.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

LLAMA_TYPES = frozenset({"llama", "mistral"})
OPT_TYPES = frozenset({"opt"})


@dataclass(frozen=True)
class ModelShape:
    """Shape of a decoder-only model. `num_params` is counted from the shape."""

    name: str
    architecture: str             # "llama" or "opt"
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int             # GQA: fewer KV heads than query heads
    head_dim: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    num_params: int
    dtype: str                    # checkpoint dtype ("float16", "bfloat16", "float32")

    def weight_bytes(self, dtype_bytes: int) -> int:
        """Estimated weight bytes: parameters × bytes per element (no quant scales)."""
        if dtype_bytes <= 0:
            raise ValueError(f"dtype_bytes must be positive, got {dtype_bytes}")
        return self.num_params * dtype_bytes


def _get_int(cfg: Mapping[str, Any], key: str, default: int | None = None) -> int:
    value = cfg.get(key)
    if value is None:  # configs write null for "use the default" (e.g. head_dim)
        value = default
    if value is None:
        raise ValueError(f"config: missing {key!r}")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"config: {key!r} must be a positive int, got {value!r}")
    return value


def _config_dtype(cfg: Mapping[str, Any]) -> str:
    # Newer transformers write "dtype", older "torch_dtype"; fp32 when absent (HF's default).
    dtype = cfg.get("dtype") or cfg.get("torch_dtype") or "float32"
    if dtype not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"config: unsupported torch_dtype {dtype!r}")
    return dtype


def _model_type(cfg: Mapping[str, Any]) -> str:
    model_type = cfg.get("model_type")
    if model_type is None:  # fall back on the class name, e.g. "LlamaForCausalLM"
        archs = cfg.get("architectures") or [""]
        model_type = str(archs[0]).lower().removesuffix("forcausallm")
    if model_type in LLAMA_TYPES or model_type in OPT_TYPES:
        return model_type
    raise ValueError(f"config: unsupported model_type {model_type!r} "
                     f"(supported: {', '.join(sorted(LLAMA_TYPES | OPT_TYPES))})")


def _llama_params(layers: int, hidden: int, heads: int, kv_heads: int, head_dim: int,
                  inter: int, vocab: int, tied: bool, attn_bias: bool, mlp_bias: bool) -> int:
    q_out, kv_out = heads * head_dim, kv_heads * head_dim
    attn = hidden * (q_out + 2 * kv_out) + q_out * hidden
    attn += (q_out + 2 * kv_out + hidden) if attn_bias else 0
    mlp = 3 * hidden * inter + ((2 * inter + hidden) if mlp_bias else 0)
    per_layer = attn + mlp + 2 * hidden            # two RMSNorm weights
    embed = vocab * hidden
    return embed + layers * per_layer + hidden + (0 if tied else embed)


def _opt_params(cfg: Mapping[str, Any], layers: int, hidden: int, ffn: int, vocab: int,
                tied: bool) -> int:
    proj = _get_int(cfg, "word_embed_proj_dim", hidden)
    positions = _get_int(cfg, "max_position_embeddings", 2048) + 2  # OPT's learned offset of 2
    bias = bool(cfg.get("enable_bias", True))
    ln = 2 * hidden if cfg.get("layer_norm_elementwise_affine", True) else 0
    attn = 4 * hidden * hidden + (4 * hidden if bias else 0)
    mlp = 2 * hidden * ffn + ((ffn + hidden) if bias else 0)
    total = vocab * proj + positions * hidden + layers * (attn + mlp + 2 * ln)
    if proj != hidden:  # project_in / project_out, no bias
        total += 2 * proj * hidden
    if cfg.get("do_layer_norm_before", True) and not cfg.get("_remove_final_layer_norm", False):
        total += ln
    return total + (0 if tied else vocab * proj)


def from_hf_config(cfg: Mapping[str, Any], name: str = "") -> ModelShape:
    """Read a Hugging Face config.json dict (Llama-style or OPT)."""
    model_type = _model_type(cfg)
    family = "opt" if model_type in OPT_TYPES else "llama"
    layers = _get_int(cfg, "num_hidden_layers")
    heads = _get_int(cfg, "num_attention_heads")
    hidden = _get_int(cfg, "hidden_size")
    vocab = _get_int(cfg, "vocab_size")
    name = name or str(cfg.get("_name_or_path") or model_type)
    if family == "llama":
        kv_heads = _get_int(cfg, "num_key_value_heads", heads)
        if heads % kv_heads:
            raise ValueError(f"config: num_attention_heads ({heads}) is not a multiple "
                             f"of num_key_value_heads ({kv_heads})")
        if cfg.get("head_dim") is None and hidden % heads:
            raise ValueError(f"config: hidden_size ({hidden}) is not a multiple of "
                             f"num_attention_heads ({heads}) and head_dim is not given")
        head_dim = _get_int(cfg, "head_dim", hidden // heads)
        inter = _get_int(cfg, "intermediate_size")
        tied = bool(cfg.get("tie_word_embeddings", False))
        biases = model_type == "llama"  # Mistral's projections never have biases
        params = _llama_params(layers, hidden, heads, kv_heads, head_dim, inter, vocab, tied,
                               biases and bool(cfg.get("attention_bias", False)),
                               biases and bool(cfg.get("mlp_bias", False)))
    else:
        if hidden % heads:
            raise ValueError(f"config: hidden_size ({hidden}) is not a multiple of "
                             f"num_attention_heads ({heads})")
        kv_heads, head_dim = heads, hidden // heads
        inter = _get_int(cfg, "ffn_dim")
        tied = bool(cfg.get("tie_word_embeddings", True))
        params = _opt_params(cfg, layers, hidden, inter, vocab, tied)
    return ModelShape(name=name, architecture=family, num_layers=layers,
                      num_attention_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
                      hidden_size=hidden, intermediate_size=inter, vocab_size=vocab,
                      tie_word_embeddings=tied, num_params=params, dtype=_config_dtype(cfg))


def from_pretrained_dir(path: str | os.PathLike[str]) -> ModelShape:
    """Read `<path>/config.json` of a local HF model directory."""
    config_path = os.path.join(os.fspath(path), "config.json")
    try:
        with open(config_path, encoding="utf-8") as f:
            cfg = json.load(f)
    except OSError as e:
        raise ValueError(f"model: cannot read {config_path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"model: {config_path} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"model: {config_path} does not hold a JSON object")
    return from_hf_config(cfg, name=os.fspath(path))


# The subset of each model's published config.json that the shape needs.
_PRESET_CONFIGS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "smollm2-135m": MappingProxyType({  # HuggingFaceTB/SmolLM2-135M-Instruct
        "model_type": "llama", "num_hidden_layers": 30, "num_attention_heads": 9,
        "num_key_value_heads": 3, "hidden_size": 576, "intermediate_size": 1536,
        "vocab_size": 49152, "tie_word_embeddings": True, "torch_dtype": "bfloat16"}),
    "opt-125m": MappingProxyType({  # facebook/opt-125m
        "model_type": "opt", "num_hidden_layers": 12, "num_attention_heads": 12,
        "hidden_size": 768, "ffn_dim": 3072, "vocab_size": 50272,
        "max_position_embeddings": 2048, "word_embed_proj_dim": 768,
        "do_layer_norm_before": True, "torch_dtype": "float16"}),
    "llama-3-8b": MappingProxyType({  # meta-llama/Meta-Llama-3-8B
        "model_type": "llama", "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "hidden_size": 4096, "intermediate_size": 14336,
        "vocab_size": 128256, "tie_word_embeddings": False, "torch_dtype": "bfloat16"}),
    "opt-13b": MappingProxyType({  # facebook/opt-13b
        "model_type": "opt", "num_hidden_layers": 40, "num_attention_heads": 40,
        "hidden_size": 5120, "ffn_dim": 20480, "vocab_size": 50272,
        "max_position_embeddings": 2048, "word_embed_proj_dim": 5120,
        "do_layer_norm_before": True, "torch_dtype": "float16"}),
})
PRESET_NAMES: tuple[str, ...] = tuple(_PRESET_CONFIGS)


def preset(name: str) -> ModelShape:
    """A preset shape by name (case-insensitive)."""
    key = name.lower()
    if key not in _PRESET_CONFIGS:
        raise ValueError(f"model: unknown preset {name!r} (presets: {', '.join(PRESET_NAMES)})")
    return from_hf_config(_PRESET_CONFIGS[key], name=key)


def resolve_model(name_or_path: str) -> ModelShape:
    """A preset name, or a local directory holding an HF config.json."""
    if name_or_path.lower() in _PRESET_CONFIGS:
        return preset(name_or_path)
    if os.path.isdir(name_or_path):
        return from_pretrained_dir(name_or_path)
    raise ValueError(f"model: {name_or_path!r} is neither a preset "
                     f"({', '.join(PRESET_NAMES)}) nor a directory with a config.json")
