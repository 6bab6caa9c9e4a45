"""Checkpoints in a local HF folder (or a snapshot of the local HF cache):
finding the weight files and streaming their tensors one at a time.

Names are those of the transformers model's state_dict: OPT checkpoints written
without the "model." prefix get it, rotary `inv_freq` buffers (not weights) and a
tied `lm_head.weight` (the same tensor as the embedding) are dropped.
"""
from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterator

import torch

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
_FORMATS = {"safetensors": ("model.safetensors.index.json", "*.safetensors"),
            "pt": ("pytorch_model.bin.index.json", "*.bin")}


def has_tokenizer(folder: str) -> bool:
    return any(os.path.isfile(os.path.join(folder, f)) for f in TOKENIZER_FILES)


def _files_of(folder: str, index_name: str, pattern: str) -> list[str]:
    index = os.path.join(folder, index_name)
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f).get("weight_map", {})
        files = sorted(set(weight_map.values()))
        missing = [n for n in files if not os.path.isfile(os.path.join(folder, n))]
        if missing:
            raise ValueError(f"model folder {folder!r}: {index_name} names missing files {missing}")
        return [os.path.join(folder, n) for n in files]
    files = sorted(glob.glob(os.path.join(folder, pattern)))
    if pattern == "*.bin":
        files = [f for f in files if os.path.basename(f).startswith("pytorch_model")]
    # Mistral-style repos ship the original consolidated file beside the HF shards.
    shards = [f for f in files if not os.path.basename(f).startswith("consolidated")]
    return shards or files


def find_weight_files(folder: str, load_format: str) -> tuple[str, tuple[str, ...]]:
    """(format, files) of the folder's checkpoint: safetensors first, then
    PyTorch .bin (load_format "auto"), or only the format asked for."""
    kinds = ("safetensors", "pt") if load_format == "auto" else (load_format,)
    for kind in kinds:
        files = _files_of(folder, *_FORMATS[kind])
        if files:
            return kind, tuple(files)
    wanted = " or ".join("*.safetensors" if k == "safetensors" else "pytorch_model*.bin" for k in kinds)
    raise ValueError(f"model folder {folder!r} has no weights ({wanted}); pass load_format='dummy' "
                     "for random weights of its config")


def _hf_name(name: str, model_type: str) -> str:
    if model_type == "opt" and name.startswith("decoder."):
        return "model." + name
    return name


def iter_checkpoint(files: tuple[str, ...], kind: str, model_type: str, tied: bool,
                    device: torch.device | str = "cpu") -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of every weight in `files`, one tensor in memory at a time
    for safetensors (a .bin file is memory-mapped whole)."""
    device = str(torch.device(device))
    for path in files:
        if kind == "safetensors":
            from safetensors import safe_open
            with safe_open(path, framework="pt", device=device) as f:
                for key in f.keys():
                    name = _hf_name(key, model_type)
                    if not _skipped(name, tied):
                        yield name, f.get_tensor(key)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            for key, tensor in state.items():
                name = _hf_name(key, model_type)
                if not _skipped(name, tied):
                    yield name, tensor.to(device)


def _skipped(name: str, tied: bool) -> bool:
    return name.endswith("rotary_emb.inv_freq") or (tied and name == "lm_head.weight")
