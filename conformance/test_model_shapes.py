"""engine.core.model_shapes against Hugging Face transformers: config reading and parameter
counts (HF builds the model on the meta device and we count its parameters)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import AutoConfig, AutoModelForCausalLM

from engine.core.model_shapes import (PRESET_NAMES, ModelShape, from_hf_config, from_pretrained_dir,
                                 preset, resolve_model)


def hf_num_params(config: Any) -> int:
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())   # tied weights counted once


def hf_config(cfg: dict[str, Any]) -> Any:
    cfg = dict(cfg)
    return AutoConfig.for_model(cfg.pop("model_type"), **cfg)


# (layers, query heads, KV heads, head_dim, hidden, intermediate, vocab) from the brief
PRESET_FACTS = {
    "smollm2-135m": (30, 9, 3, 64, 576, 1536, 49152),
    "opt-125m": (12, 12, 12, 64, 768, 3072, 50272),
    "llama-3-8b": (32, 32, 8, 128, 4096, 14336, 128256),
    "opt-13b": (40, 40, 40, 128, 5120, 20480, 50272),
}


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_presets_have_the_published_shapes_and_hf_parameter_counts(name: str) -> None:
    shape = preset(name)
    assert (shape.num_layers, shape.num_attention_heads, shape.num_kv_heads, shape.head_dim,
            shape.hidden_size, shape.intermediate_size, shape.vocab_size) == PRESET_FACTS[name]
    cfg = {k: getattr(shape, k) for k in ("hidden_size", "vocab_size", "tie_word_embeddings")}
    cfg.update(num_hidden_layers=shape.num_layers, num_attention_heads=shape.num_attention_heads)
    if shape.architecture == "llama":
        cfg.update(model_type="llama", num_key_value_heads=shape.num_kv_heads,
                   intermediate_size=shape.intermediate_size)
    else:
        cfg.update(model_type="opt", ffn_dim=shape.intermediate_size)
    assert shape.num_params == hf_num_params(hf_config(cfg))


def test_preset_lookup_is_case_insensitive_and_names_unknown_models() -> None:
    assert resolve_model("SmolLM2-135M") == preset("smollm2-135m")
    assert set(PRESET_NAMES) == set(PRESET_FACTS) and "smollm2-135m" in PRESET_NAMES
    with pytest.raises(ValueError, match="gpt-5"):
        resolve_model("gpt-5")
    with pytest.raises(ValueError, match="unknown preset"):
        preset("gpt-5")


def test_smollm2_weight_estimate() -> None:
    shape = preset("smollm2-135m")
    assert shape.dtype == "bfloat16" and shape.tie_word_embeddings
    assert shape.weight_bytes(2) == 2 * shape.num_params
    with pytest.raises(ValueError, match="dtype_bytes"):
        shape.weight_bytes(0)


@st.composite
def llama_configs(draw: st.DrawFn) -> dict[str, Any]:
    kv_heads = draw(st.integers(1, 4))
    heads = kv_heads * draw(st.integers(1, 4))
    head_dim = draw(st.sampled_from([4, 8, 16]))
    explicit_head_dim = draw(st.booleans())   # then hidden need not be heads x head_dim
    hidden = heads * (draw(st.sampled_from([4, 8, 12])) if explicit_head_dim else head_dim)
    return {"model_type": draw(st.sampled_from(["llama", "mistral"])),
            "num_hidden_layers": draw(st.integers(1, 3)), "num_attention_heads": heads,
            "num_key_value_heads": kv_heads, "hidden_size": hidden,
            **({"head_dim": head_dim} if explicit_head_dim else {}),
            "intermediate_size": draw(st.integers(1, 64)), "vocab_size": draw(st.integers(2, 300)),
            "tie_word_embeddings": draw(st.booleans()),
            "attention_bias": draw(st.booleans()), "mlp_bias": draw(st.booleans())}


@st.composite
def opt_configs(draw: st.DrawFn) -> dict[str, Any]:
    heads = draw(st.integers(1, 4))
    hidden = heads * draw(st.sampled_from([4, 8, 16]))
    return {"model_type": "opt", "num_hidden_layers": draw(st.integers(1, 3)),
            "num_attention_heads": heads, "hidden_size": hidden,
            "ffn_dim": draw(st.integers(1, 64)), "vocab_size": draw(st.integers(2, 300)),
            "max_position_embeddings": draw(st.integers(1, 64)),
            "word_embed_proj_dim": draw(st.sampled_from([hidden, 8])),
            "enable_bias": draw(st.booleans()), "do_layer_norm_before": draw(st.booleans()),
            "layer_norm_elementwise_affine": draw(st.booleans()),
            "tie_word_embeddings": draw(st.booleans())}


@given(cfg=st.one_of(llama_configs(), opt_configs()))
def test_hf_config_dicts_read_like_transformers_builds_them(cfg: dict[str, Any]) -> None:
    config = hf_config(cfg)
    shape = from_hf_config(config.to_dict())   # the dict HF itself writes to config.json
    assert shape.num_layers == cfg["num_hidden_layers"]
    assert shape.num_attention_heads == cfg["num_attention_heads"]
    heads = cfg["num_attention_heads"]
    assert shape.num_kv_heads == cfg.get("num_key_value_heads", heads)
    assert shape.head_dim == cfg.get("head_dim", cfg["hidden_size"] // heads)
    assert shape.num_params == hf_num_params(config)


def test_llama_defaults_kv_heads_and_head_dim() -> None:
    shape = from_hf_config({"model_type": "llama", "num_hidden_layers": 2,
                            "num_attention_heads": 8, "hidden_size": 256,
                            "intermediate_size": 64, "vocab_size": 100, "head_dim": None})
    assert (shape.num_kv_heads, shape.head_dim, shape.dtype) == (8, 32, "float32")
    assert not shape.tie_word_embeddings


def test_saved_hf_directory_round_trips(tmp_path: Path) -> None:
    config = AutoConfig.for_model("llama", num_hidden_layers=3, num_attention_heads=6,
                                  num_key_value_heads=2, hidden_size=96, intermediate_size=40,
                                  vocab_size=77, torch_dtype="bfloat16")
    config.save_pretrained(tmp_path)
    shape = resolve_model(str(tmp_path))
    assert isinstance(shape, ModelShape) and shape.name == str(tmp_path)
    assert (shape.num_layers, shape.num_kv_heads, shape.head_dim, shape.dtype) == (
        3, 2, 16, "bfloat16")
    assert shape.num_params == hf_num_params(config)


def test_model_type_falls_back_on_architectures() -> None:
    cfg = {"architectures": ["OPTForCausalLM"], "num_hidden_layers": 1,
           "num_attention_heads": 2, "hidden_size": 8, "ffn_dim": 4, "vocab_size": 10}
    assert from_hf_config(cfg).architecture == "opt"


@pytest.mark.parametrize("cfg, needle", [
    ({"model_type": "gpt2", "num_hidden_layers": 1}, "unsupported model_type 'gpt2'"),
    ({"model_type": "llama", "num_attention_heads": 8, "hidden_size": 64,
      "vocab_size": 10, "intermediate_size": 4}, "num_hidden_layers"),
    ({"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 8,
      "num_key_value_heads": 3, "hidden_size": 64, "intermediate_size": 4, "vocab_size": 10},
     "num_key_value_heads"),
    ({"model_type": "llama", "num_hidden_layers": 0, "num_attention_heads": 8,
      "hidden_size": 64, "intermediate_size": 4, "vocab_size": 10}, "num_hidden_layers"),
    ({"model_type": "opt", "num_hidden_layers": 2, "num_attention_heads": 3,
      "hidden_size": 64, "ffn_dim": 4, "vocab_size": 10}, "hidden_size"),
    ({"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 8, "hidden_size": 64,
      "intermediate_size": 4, "vocab_size": 10, "torch_dtype": "int4"}, "torch_dtype"),
])
def test_bad_configs_raise_value_error_naming_the_key(cfg: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        from_hf_config(cfg)


def test_bad_directories(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        from_pretrained_dir(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        resolve_model(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ValueError, match="JSON object"):
        resolve_model(str(tmp_path))
