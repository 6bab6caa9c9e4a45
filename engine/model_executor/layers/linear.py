"""The models' linear layers: `Linear` (nn.Linear that can run from a oneDNN-packed
weight on CPU), and `ShardedLinear`, whose output rows are several checkpoint
projections side by side (q|k|v, gate|up): one matmul instead of several, loaded
shard by shard."""
from __future__ import annotations

import torch
from torch import nn


class PackedGemm:
    """x @ W^T (+ b) through oneDNN with W reordered once into oneDNN's blocked layout.

    torch's CPU F.linear hands MKL a plain row-major weight, which MKL re-packs on
    every call: for the engine's small decode batches that repacking costs about as
    much as the product (a [16, 576] x [576, 49152] logits GEMM ran 1.3-1.7x faster
    packed on the 2-core AVX2 machines). The packed copy does not follow later
    writes to W: a call after W changed raises instead of using stale weights."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        reason = packed_gemm_unavailable(weight.device, weight.dtype)
        if reason:
            raise ValueError(f"cannot pack this weight: {reason}")
        self.weight = weight
        self.bias = bias
        self._packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)
        self._versions = self._current_versions()

    def _current_versions(self) -> tuple[int, int | None]:
        return self.weight._version, None if self.bias is None else self.bias._version

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._current_versions() != self._versions:
            raise RuntimeError("the weight changed after it was packed for oneDNN; pack it again "
                               "(call pack_gemms after loading weights)")
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self._packed, self.bias, "none", [], "")


def packed_gemm_unavailable(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why PackedGemm cannot serve weights of this device and dtype, or None when it can."""
    if device.type != "cpu":
        return f"oneDNN packed weights are a CPU path (device is {device})"
    if dtype != torch.float32:
        return f"oneDNN packed weights are used for float32 only (dtype is {dtype})"
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN (torch.backends.mkldnn.is_available() is False)"
    ops = torch.ops.mkldnn
    if not (hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise")):
        return "this torch build lacks oneDNN's packed linear ops"
    return None


class Linear(nn.Linear):
    """nn.Linear that can serve its forward from a PackedGemm (see `pack`)."""

    packed: PackedGemm | None = None

    def pack(self) -> None:
        """Serve forward from a oneDNN-packed copy of the weight (CPU float32)."""
        self.packed = PackedGemm(self.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return self.packed(x)
        return super().forward(x)


def pack_gemms(model: nn.Module) -> str | None:
    """Pack every Linear of `model` and its logits head (`model.logits_weight()`, set
    as `model.head_gemm`) where PackedGemm can serve them; returns why not, or None."""
    weight = model.logits_weight()
    reason = packed_gemm_unavailable(weight.device, weight.dtype)
    if reason:
        return reason
    linears = [m for m in model.modules() if isinstance(m, Linear)]
    for module in linears:
        module.pack()
    # An untied head is one of the Linears: share its packed copy rather than pack it twice.
    model.head_gemm = next((m.packed for m in linears if m.weight is weight), None) or PackedGemm(weight)
    return None


class ShardedLinear(Linear):
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
