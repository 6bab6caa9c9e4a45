"""pagedlm's engine. The public names load on first use, so that importing a
torch-free part (engine.core, engine.sampling.sampling_params) never loads torch."""
from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "LLM": "engine.entrypoints.llm",
    "LLMEngine": "engine.llm_engine",
    "EngineArgs": "engine.engine_args",
    "SamplingParams": "engine.sampling.sampling_params",
    "RequestOutput": "engine.outputs",
    "CompletionOutput": "engine.outputs",
    "Logprob": "engine.outputs",
}

__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
