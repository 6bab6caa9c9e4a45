"""Model configs: read, checked against the supported architectures, turned into
transformers configs. The architectures are those engine/core/model_shapes.py
understands (its memory math and the models cover the same families)."""
from __future__ import annotations

import json
import os
from typing import Any

from transformers import AutoConfig, PretrainedConfig

from engine.core.model_shapes import LLAMA_TYPES, OPT_TYPES, from_hf_config

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(sorted(LLAMA_TYPES | OPT_TYPES))


def read_config_json(folder: str) -> dict[str, Any]:
    """`folder/config.json` as a dict; ValueError when it is missing or not a JSON object."""
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise ValueError(f"model folder {folder!r} has no config.json")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"model: {path} is not valid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"model: {path} does not hold a JSON object")
    return cfg


def check_architecture(cfg: dict[str, Any], where: str) -> str:
    """The config's model_type, or ValueError naming `where` and the supported
    architectures (also when a shape field the engine needs is missing or bad)."""
    try:
        from_hf_config(cfg, name=where)
    except ValueError as e:
        raise ValueError(f"model {where!r}: {e} (supported architectures: "
                         f"{', '.join(SUPPORTED_MODEL_TYPES)})") from None
    model_type = cfg.get("model_type")
    if model_type is None:  # model_shapes accepted it from `architectures`
        model_type = str(cfg["architectures"][0]).lower().removesuffix("forcausallm")
    return str(model_type)


def hf_config_from_dict(cfg: dict[str, Any], where: str) -> PretrainedConfig:
    """A transformers config of a checked config dict."""
    model_type = check_architecture(cfg, where)
    rest = {k: v for k, v in cfg.items() if k != "model_type"}
    return AutoConfig.for_model(model_type, **rest)


def hf_config_from_folder(folder: str) -> PretrainedConfig:
    """The transformers config of a local model folder, checked first."""
    check_architecture(read_config_json(folder), folder)
    return AutoConfig.from_pretrained(folder, local_files_only=True)
