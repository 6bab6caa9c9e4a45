"""Copying checkpoint tensors (HF names) into a model's parameters in place.

A model's parameters carry HF's names except the fused linears (ShardedLinear),
whose shards carry the checkpoint module names, so the map from checkpoint name
to (parameter, rows) is derived from the module tree instead of a table per model.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from engine.model_executor.layers.linear import ShardedLinear

Target = tuple[torch.Tensor, slice | None]


def checkpoint_targets(model: nn.Module) -> dict[str, Target]:
    """Checkpoint name -> (parameter, its output rows or None for all of it)."""
    targets: dict[str, Target] = {}
    for name, param in model.named_parameters():      # a tied parameter is listed once
        module_name, _, leaf = name.rpartition(".")
        module = model.get_submodule(module_name)
        if isinstance(module, ShardedLinear):
            parent = module_name.rpartition(".")[0]
            prefix = f"{parent}." if parent else ""
            for shard in module.shard_names:
                targets[f"{prefix}{shard}.{leaf}"] = (param, module.shard_slice(shard))
        else:
            targets[name] = (param, None)
    return targets


def load_checkpoint(model: nn.Module, weights: Iterable[tuple[str, torch.Tensor]],
                    tied: dict[str, str] | None = None,
                    ignore: Callable[[str], bool] = lambda name: False,
                    rename: Callable[[str], str] = lambda name: name) -> None:
    """Copy every tensor of `weights` into its target. `tied` maps a checkpoint
    name that may be absent (e.g. "lm_head.weight") to the name it must equal when
    present. Raises ValueError naming an unexpected, repeated, missing or
    mis-shaped tensor, or a tied one that differs from its twin."""
    tied = tied or {}
    targets = checkpoint_targets(model)
    seen: set[str] = set()
    twins: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for raw_name, tensor in weights:
            name = rename(raw_name)
            if ignore(name):
                continue
            if name in seen or name in twins:
                raise ValueError(f"tensor {raw_name!r} appears twice in the weights")
            if name in tied:
                twins[name] = tensor
                continue
            if name not in targets:
                raise ValueError(f"unexpected tensor {raw_name!r}: the model has no parameter for it")
            param, rows = targets[name]
            dest = param if rows is None else param[rows]
            if tuple(tensor.shape) != tuple(dest.shape):
                raise ValueError(f"tensor {raw_name!r} has shape {tuple(tensor.shape)}, "
                                 f"the model expects {tuple(dest.shape)}")
            dest.copy_(tensor)
            seen.add(name)
    missing = sorted(set(targets) - seen)
    if missing:
        raise ValueError(f"missing tensors in the weights: {missing}")
    for name, tensor in twins.items():
        param, _ = targets[tied[name]]
        if tuple(tensor.shape) != tuple(param.shape) or not torch.equal(
                tensor.to(device=param.device, dtype=param.dtype), param):
            raise ValueError(f"tensor {name!r} must equal {tied[name]!r} (the embeddings are tied)")
