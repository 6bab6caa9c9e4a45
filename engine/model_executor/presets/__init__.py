"""Model presets: each `<name>.json` is the published config.json of a model
(the fields transformers reads), shipped as package data so `load_format="dummy"`
needs no download. engine/core/model_shapes.py keeps the subset its memory math
reads; a conformance test holds the two to the same shapes.
"""
from __future__ import annotations

import json
from importlib import resources
from types import MappingProxyType
from typing import Any, Mapping

# Where each preset's real weights live on the hub (looked up in the local HF cache only).
PRESET_HUB_IDS: Mapping[str, str] = MappingProxyType({
    "smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "opt-125m": "facebook/opt-125m",
    "llama-3-8b": "meta-llama/Meta-Llama-3-8B",
    "opt-13b": "facebook/opt-13b",
})
PRESET_NAMES: tuple[str, ...] = tuple(PRESET_HUB_IDS)


def is_preset(name: str) -> bool:
    return name.lower() in PRESET_HUB_IDS


def preset_config_dict(name: str) -> dict[str, Any]:
    """A fresh copy of the preset's config.json as a dict (case-insensitive name)."""
    key = name.lower()
    if key not in PRESET_HUB_IDS:
        raise ValueError(f"model: unknown preset {name!r} (presets: {', '.join(PRESET_NAMES)})")
    text = resources.files(__package__).joinpath(f"{key}.json").read_text(encoding="utf-8")
    return json.loads(text)
