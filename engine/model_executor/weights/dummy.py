"""Random weights for any supported config (`load_format="dummy"`), and a loader
that puts the same tensors into the transformers model, so HF stays the oracle.

The names and shapes are those of the transformers model built on the meta
device (no memory), so they match HF by construction. Each tensor is drawn from
its own generator, seeded from (seed, name): the same (config, seed) gives the
same tensors in any order, and one tensor can be drawn without the others.
Scales: embeddings, projections and biases ~ N(0, std) with std the config's
initializer_range (OPT: init_std; 0.02 when absent); norm weights 1 + N(0, std)
and norm biases N(0, std), so norms are near identity but not exactly it (a
model that ignored its norm weights would show). A tied lm_head is not yielded.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping

import torch
from transformers import AutoModelForCausalLM, PretrainedConfig


def _meta_model(config: PretrainedConfig) -> torch.nn.Module:
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def _init_std(config: PretrainedConfig) -> float:
    for key in ("initializer_range", "init_std"):
        value = getattr(config, key, None)
        if isinstance(value, (int, float)) and value > 0:
            return float(value)
    return 0.02


def _tied(config: PretrainedConfig) -> bool:
    return bool(getattr(config, "tie_word_embeddings", False))


def _is_norm(module: torch.nn.Module) -> bool:
    return type(module).__name__.endswith("Norm") or isinstance(module, torch.nn.LayerNorm)


def _tensor_seed(seed: int, name: str) -> int:
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def dummy_weight_specs(config: PretrainedConfig) -> dict[str, tuple[tuple[int, ...], bool]]:
    """name -> (shape, belongs to a norm) of every weight a checkpoint of this
    config holds (a tied lm_head excluded), in the model's state_dict order."""
    model = _meta_model(config)
    specs: dict[str, tuple[tuple[int, ...], bool]] = {}
    for name, tensor in model.state_dict().items():
        if _tied(config) and name == "lm_head.weight":
            continue
        owner = model.get_submodule(name.rpartition(".")[0])
        specs[name] = (tuple(tensor.shape), _is_norm(owner))
    return specs


def dummy_weights(config: PretrainedConfig, seed: int = 0,
                  device: torch.device | str = "cpu") -> Iterator[tuple[str, torch.Tensor]]:
    """(name, float32 tensor) for every weight of `config`, drawn one at a time on
    `device` (a CUDA generator draws other numbers than a CPU one: compare within
    one device)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    device = torch.device(device)
    std = _init_std(config)
    gen = torch.Generator(device=device)
    for name, (shape, norm) in dummy_weight_specs(config).items():
        gen.manual_seed(_tensor_seed(seed, name))
        tensor = torch.randn(shape, generator=gen, device=device, dtype=torch.float32) * std
        if norm and name.endswith("weight"):
            tensor += 1.0
        yield name, tensor


def dummy_state_dict(config: PretrainedConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """All of `dummy_weights(config, seed)` on the CPU, as a dict."""
    return dict(dummy_weights(config, seed))


def load_into_hf(hf_model: torch.nn.Module,
                 weights: Iterable[tuple[str, torch.Tensor]] | Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """Copy (name, tensor) pairs (a ModelSource's `weights()`, `dummy_weights`, or a
    dict) into a transformers model, cast to its dtype. Every weight of the model
    must be given (a tied lm_head comes with the embedding) and no other name:
    ValueError naming the difference. Returns the model."""
    items = weights.items() if isinstance(weights, Mapping) else weights
    state = {name: tensor for name, tensor in items}
    expected = set(hf_model.state_dict())
    tied = _tied(hf_model.config)
    unexpected = sorted(set(state) - expected)
    missing = sorted(expected - set(state) - ({"lm_head.weight"} if tied else set()))
    if unexpected or missing:
        raise ValueError(f"weights do not match the HF model: unexpected {unexpected[:5]}, "
                         f"missing {missing[:5]}")
    try:
        with torch.no_grad():
            hf_model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # torch reports shape mismatches this way
        raise ValueError(f"weights do not fit the HF model: {e}") from None
    return hf_model
