"""Model sources (engine/model_executor/weights): dummy weights, local folders, the
local HF cache, errors, the dtype rule, presets, and the SmolLM2 GGUF cache.

Oracles: transformers' own models (their state_dict names and what
save_pretrained writes), engine/core/model_shapes.py's closed-form parameter
counts for the presets, and a GGUF reader with gguf's dequantiser for the
SmolLM2 cache (test_weights_smollm2.py).
"""
from __future__ import annotations

import json
import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM, LlamaConfig, OPTConfig

import engine.model_executor.weights.smollm2 as smollm2
from engine.core import model_shapes
from engine.model_executor.presets import PRESET_NAMES, preset_config_dict
from engine.model_executor.weights import (dummy_state_dict, dummy_weight_specs, dummy_weights, load_into_hf,
                                           resolve_dtype, resolve_model_source)
from engine.model_executor.weights.cache import cached_build


def tiny_llama(tied: bool = False) -> LlamaConfig:
    return LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=96, max_position_embeddings=64,
                       tie_word_embeddings=tied)


def tiny_opt() -> OPTConfig:
    return OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=96,
                     max_position_embeddings=64, word_embed_proj_dim=32)


def write_config(folder, config) -> str:
    os.makedirs(folder, exist_ok=True)
    config.save_pretrained(folder)
    return str(folder)


@pytest.fixture(autouse=True)
def _no_hub_no_gguf(monkeypatch, tmp_path_factory):
    """An empty HF cache and no GGUF conversion: no test here may read the real HF
    cache or build the SmolLM2 cache by accident (test_weights_smollm2.py does)."""
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf_hub")))

    def refuse(*args, **kwargs):
        raise AssertionError("this test must not convert the GGUF")
    monkeypatch.setattr(smollm2, "dequantise_gguf", refuse)
    monkeypatch.setattr(smollm2, "_build_tokenizer", refuse)


# ---- dummy weights --------------------------------------------------------------

@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow], max_examples=10)
@given(seed=st.integers(0, 2**31 - 1), tied=st.booleans())
def test_dummy_weights_are_a_function_of_config_and_seed(seed, tied):
    config = tiny_llama(tied)
    first = dummy_state_dict(config, seed)
    again = dict(reversed(list(dummy_weights(config, seed))))   # a second, independent draw
    other = dummy_state_dict(config, seed + 1)
    expected = {k for k in AutoModelForCausalLM.from_config(config).state_dict()
                if not (tied and k == "lm_head.weight")}
    assert set(first) == expected
    for name, tensor in first.items():
        assert tensor.dtype == torch.float32
        assert torch.equal(tensor, again[name]), name
        assert not torch.equal(tensor, other[name]), name


def test_dummy_scales_are_sensible():
    config = tiny_opt()
    std = config.init_std
    specs = dummy_weight_specs(config)
    for name, tensor in dummy_weights(config, seed=3):
        norm = specs[name][1]
        centre = 1.0 if norm and name.endswith("weight") else 0.0
        assert abs(float(tensor.mean()) - centre) < 4 * std, name
        if tensor.numel() >= 1000:
            assert 0.8 * std < float(tensor.std()) < 1.2 * std, name
    assert any(norm for _, norm in specs.values())


@pytest.mark.parametrize("make", [tiny_llama, lambda: tiny_llama(tied=True), tiny_opt])
def test_load_into_hf_puts_the_dummy_tensors_into_hf(tmp_path, make):
    config = make()
    source = resolve_model_source(write_config(tmp_path, config), load_format="dummy", seed=7,
                                  skip_tokenizer_init=True)
    model = load_into_hf(AutoModelForCausalLM.from_config(config), source.weights())
    drawn = dummy_state_dict(config, 7)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            embed = "model.decoder.embed_tokens.weight" if config.model_type == "opt" else "model.embed_tokens.weight"
            assert torch.equal(tensor, drawn[embed])
        else:
            assert torch.equal(tensor, drawn[name]), name
    # Not degenerate: different one-token prompts get different greedy next tokens.
    with torch.no_grad():
        logits = model(torch.arange(16).unsqueeze(1)).logits[:, -1]
    assert len(set(logits.argmax(-1).tolist())) >= 4


def test_load_into_hf_rejects_mismatched_names():
    config = tiny_llama()
    model = AutoModelForCausalLM.from_config(config)
    state = dummy_state_dict(config)
    with pytest.raises(ValueError, match="missing"):
        load_into_hf(model, {k: v for k, v in state.items() if k != "model.norm.weight"})
    with pytest.raises(ValueError, match="unexpected"):
        load_into_hf(model, {**state, "model.extra.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="do not fit"):
        load_into_hf(model, {**state, "model.norm.weight": torch.zeros(3)})


# ---- presets --------------------------------------------------------------------

def test_presets_agree_with_model_shapes():
    assert set(PRESET_NAMES) == set(model_shapes.PRESET_NAMES)
    for name in PRESET_NAMES:
        shape = model_shapes.preset(name)
        assert model_shapes.from_hf_config(preset_config_dict(name), name=name) == shape
        source = resolve_model_source(name, load_format="dummy", skip_tokenizer_init=True)
        specs = dummy_weight_specs(source.hf_config)      # HF's model on the meta device
        count = sum(math.prod(s) for s, _ in specs.values())
        assert count == shape.num_params, name             # tied lm_head not a separate weight


def test_llama_3_8b_dummy_resolves_without_drawing():
    source = resolve_model_source("Llama-3-8B", load_format="dummy", skip_tokenizer_init=True)
    cfg = source.hf_config
    assert (cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.vocab_size) == (32, 8, 128256)
    assert source.weights_dir is None and source.tokenizer_path is None


# ---- local folders and the HF cache ---------------------------------------------

def hf_model(config, seed: int = 0):
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def assert_same_weights(source, model) -> None:
    tied = model.config.tie_word_embeddings
    expected = {k: v for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}
    got = dict(source.weights())
    assert set(got) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(got[name], tensor), name


@pytest.mark.parametrize("make,shard", [(tiny_llama, None), (tiny_opt, None), (tiny_llama, "20KB")])
def test_local_folder_round_trip(tmp_path, make, shard):
    model = hf_model(make())
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(tmp_path, **kwargs)
    source = resolve_model_source(str(tmp_path))
    assert source.load_format == "safetensors" and source.tokenizer_path is None
    assert len(source.weight_files) > (1 if shard else 0)
    assert source.hf_config.to_dict()["hidden_size"] == 32
    assert_same_weights(source, model)


def test_pytorch_bin_checkpoint_gets_hf_names(tmp_path):
    """OPT's original checkpoints name weights "decoder.*" (no "model." prefix)."""
    model = hf_model(tiny_opt())
    model.config.save_pretrained(tmp_path)
    state = {k.removeprefix("model."): v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    torch.save(state, tmp_path / "pytorch_model.bin")
    source = resolve_model_source(str(tmp_path))
    assert source.load_format == "pt"
    assert_same_weights(source, model)
    with pytest.raises(ValueError, match="no weights"):
        resolve_model_source(str(tmp_path), load_format="safetensors")


def test_folder_with_tokenizer_files_is_its_own_tokenizer(tmp_path):
    hf_model(tiny_llama()).save_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{}")
    assert resolve_model_source(str(tmp_path)).tokenizer_path == str(tmp_path)
    assert resolve_model_source(str(tmp_path), skip_tokenizer_init=True).tokenizer_path is None


def test_hub_id_resolves_through_the_local_cache_only(tmp_path):
    import huggingface_hub.constants
    model = hf_model(tiny_llama(), seed=1)
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = os.path.join(huggingface_hub.constants.HF_HUB_CACHE, "models--acme--tiny-llama")
    model.save_pretrained(os.path.join(repo, "snapshots", revision))
    os.makedirs(os.path.join(repo, "refs"))
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write(revision)
    source = resolve_model_source("acme/tiny-llama")
    assert source.weights_dir.endswith(revision)
    assert_same_weights(source, model)
    with pytest.raises(ValueError, match="local Hugging Face cache.*presets?"):
        resolve_model_source("acme/not-downloaded")


# ---- errors -----------------------------------------------------------------------

def test_bad_models_raise_value_errors(tmp_path):
    presets = ", ".join(PRESET_NAMES)
    with pytest.raises(ValueError, match=f"not a preset.*{presets}"):
        resolve_model_source("no-such-model")
    with pytest.raises(ValueError, match="not a preset"):
        resolve_model_source(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="no config.json"):
        resolve_model_source(str(tmp_path))
    only_config = write_config(tmp_path / "config_only", tiny_llama())
    with pytest.raises(ValueError, match="has no weights.*dummy"):
        resolve_model_source(only_config)
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    with pytest.raises(ValueError, match="unsupported.*llama, mistral, opt"):
        resolve_model_source(str(gpt2), load_format="dummy")
    with pytest.raises(ValueError, match="opt-125m.*not in the local Hugging Face cache.*dummy"):
        resolve_model_source("opt-125m")


@pytest.mark.parametrize("kwargs,match", [
    ({"model": ""}, "model must be"), ({"load_format": "gguf"}, "load_format must be one of"),
    ({"seed": 1.5}, "seed must be an int"), ({"seed": True}, "seed must be an int"),
    ({"tokenizer": "/nonexistent/tok"}, "tokenizer '/nonexistent/tok'"),
])
def test_bad_arguments_name_the_argument(kwargs, match):
    args = {"model": "opt-125m", "load_format": "dummy", **kwargs}
    with pytest.raises(ValueError, match=match):
        resolve_model_source(args.pop("model"), **args)


# ---- dtype ------------------------------------------------------------------------

@pytest.fixture
def cpuinfo(tmp_path):
    def make(flags: str) -> str:
        path = tmp_path / f"cpuinfo_{len(flags)}"
        path.write_text(f"processor\t: 0\nflags\t\t: fpu sse2 avx2 {flags}\n\nprocessor\t: 1\n")
        return str(path)
    return make


@pytest.mark.parametrize("requested,config_dtype,flags,expected", [
    ("auto", "bfloat16", "", torch.float32),
    ("auto", "bfloat16", "avx512_bf16", torch.bfloat16),
    ("auto", "bfloat16", "amx_bf16", torch.bfloat16),
    ("auto", "float16", "", torch.float32),
    ("auto", "float16", "avx512_bf16", torch.bfloat16),
    ("auto", "float32", "", torch.float32),
    ("auto", None, "", torch.float32),
    ("float16", "float32", "", torch.float16),      # explicit: obeyed on CPU (slow, works)
    ("bfloat16", "float32", "", torch.bfloat16),
    ("float32", "bfloat16", "avx512_bf16", torch.float32),
])
def test_resolve_dtype_on_cpu(cpuinfo, requested, config_dtype, flags, expected):
    config = LlamaConfig(dtype=config_dtype) if config_dtype else LlamaConfig()
    dtype, reason = resolve_dtype(requested, config, "cpu", cpuinfo_path=cpuinfo(flags))
    assert dtype == expected
    assert reason


def test_resolve_dtype_rejects_bad_values(cpuinfo):
    for bad in ("fp16", "half", "float64", ""):
        with pytest.raises(ValueError, match=f"dtype must be one of .*{bad!r}"):
            resolve_dtype(bad, LlamaConfig(), "cpu")
    with pytest.raises(ValueError, match="device must be cpu or cuda"):
        resolve_dtype("auto", LlamaConfig(), "meta")
    _, reason = resolve_dtype("auto", LlamaConfig(dtype="bfloat16"), "cpu", cpuinfo_path=cpuinfo(""))
    assert "no avx512_bf16" in reason
    _, reason = resolve_dtype("auto", LlamaConfig(), "cpu", cpuinfo_path=str(cpuinfo("")) + ".absent")
    assert "from the config" in reason


# ---- the cache folder ---------------------------------------------------------------

def test_cached_build_builds_once_and_publishes_whole(tmp_path):
    calls = []

    def build(out):
        calls.append(out)
        with open(os.path.join(out, "data"), "w") as f:
            f.write("x")
    path = cached_build(str(tmp_path), "entry", build)
    assert cached_build(str(tmp_path), "entry", build) == path and len(calls) == 1
    assert open(os.path.join(path, "data")).read() == "x"

    def fail(out):
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        cached_build(str(tmp_path), "failed", fail)

    def lose_race(out):  # another process (no lock) publishes while this one builds
        os.makedirs(os.path.join(str(tmp_path), "raced"))
        open(os.path.join(str(tmp_path), "raced", "theirs"), "w").close()
        open(os.path.join(out, "mine"), "w").close()
    raced = cached_build(str(tmp_path), "raced", lose_race)
    assert os.listdir(raced) == ["theirs"]               # the winner's entry, untouched
    assert sorted(n for n in os.listdir(tmp_path) if not n.endswith(".lock")) == ["entry", "raced"]
    with pytest.raises(ValueError, match="key must be"):
        cached_build(str(tmp_path), "../x", build)
