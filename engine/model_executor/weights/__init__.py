"""Model sources: config, weights and tokenizer of a preset, a local folder, a
cached hub id or the SmolLM2 GGUF; dummy weights; the model dtype."""
from engine.model_executor.presets import PRESET_NAMES
from engine.model_executor.weights.cache import CACHE_ENV, cache_root
from engine.model_executor.weights.config import SUPPORTED_MODEL_TYPES
from engine.model_executor.weights.dtype import DTYPE_NAMES, cpu_has_fast_bf16, resolve_dtype
from engine.model_executor.weights.dummy import dummy_state_dict, dummy_weight_specs, dummy_weights, load_into_hf
from engine.model_executor.weights.source import DEFAULT_MODEL, LOAD_FORMATS, ModelSource, resolve_model_source

__all__ = ["CACHE_ENV", "DEFAULT_MODEL", "DTYPE_NAMES", "LOAD_FORMATS", "PRESET_NAMES", "SUPPORTED_MODEL_TYPES",
           "ModelSource", "cache_root", "cpu_has_fast_bf16", "dummy_state_dict", "dummy_weight_specs",
           "dummy_weights", "load_into_hf", "resolve_dtype", "resolve_model_source"]
