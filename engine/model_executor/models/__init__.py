"""The supported model architectures, chosen from a transformers config."""
from __future__ import annotations

from typing import Any

from engine.model_executor.models.llama import LlamaForCausalLM
from engine.model_executor.models.opt import OPTForCausalLM

# config.architectures entry -> our class; model_type is the fallback when a config
# names no architecture (e.g. one built with LlamaConfig(...)).
ARCHITECTURES: dict[str, type] = {
    "LlamaForCausalLM": LlamaForCausalLM,
    "MistralForCausalLM": LlamaForCausalLM,
    "OPTForCausalLM": OPTForCausalLM,
}
MODEL_TYPES: dict[str, type] = {"llama": LlamaForCausalLM, "mistral": LlamaForCausalLM, "opt": OPTForCausalLM}


def get_model_class(config: Any) -> type:
    """Our model class for `config` (its `architectures`, else its `model_type`)."""
    names = list(getattr(config, "architectures", None) or [])
    for name in names:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    model_type = getattr(config, "model_type", None)
    if not names and model_type in MODEL_TYPES:
        return MODEL_TYPES[model_type]
    raise ValueError(f"unsupported model (architectures={names}, model_type={model_type!r}); "
                     f"supported architectures: {sorted(ARCHITECTURES)}, "
                     f"model types: {sorted(MODEL_TYPES)}")


__all__ = ["ARCHITECTURES", "MODEL_TYPES", "LlamaForCausalLM", "OPTForCausalLM", "get_model_class"]
