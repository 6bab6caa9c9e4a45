"""A linear layer whose output rows are several checkpoint projections side by
side (q|k|v, gate|up): one matmul instead of several, loaded shard by shard."""
from __future__ import annotations

import torch
from torch import nn


class ShardedLinear(nn.Linear):
    """nn.Linear(in_features, sum of the shard sizes). `shards` names each part by
    its checkpoint module name (e.g. ("q_proj", 512)), in output order."""

    def __init__(self, in_features: int, shards: list[tuple[str, int]], bias: bool = False) -> None:
        if not shards:
            raise ValueError("shards must name at least one projection")
        for name, size in shards:
            if size < 1:
                raise ValueError(f"shard {name!r} has size {size}; sizes must be >= 1")
        names = [name for name, _ in shards]
        if len(set(names)) != len(names):
            raise ValueError(f"shard names must be distinct, got {names}")
        super().__init__(in_features, sum(size for _, size in shards), bias=bias)
        self.shard_names = tuple(names)
        self.shard_sizes = tuple(size for _, size in shards)

    def shard_slice(self, name: str) -> slice:
        """The output rows of shard `name`."""
        if name not in self.shard_names:
            raise ValueError(f"shard must be one of {self.shard_names}, got {name!r}")
        i = self.shard_names.index(name)
        start = sum(self.shard_sizes[:i])
        return slice(start, start + self.shard_sizes[i])

    def split(self, out: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The forward's output cut into the shards (views, last dim)."""
        return out.split(self.shard_sizes, dim=-1)
