"""The paged KV cache: per-layer device blocks, CPU swap blocks, and the block moves.

Layout per layer (docs/architecture.md, "KV cache contract"):
`[num_blocks, 2, block_size, num_kv_heads, head_dim]`, and for fp8/int8 caches a
float32 scale per token and KV head, `[num_blocks, 2, block_size, num_kv_heads]`.
The CPU swap pool has the same layout with its own block count. A slot that was
never written is never read (the backends read a sequence's first context_len
slots only; the conformance fills unused slots with NaN to prove it), so CPU
caches are left uninitialised: zeroing gigabytes would cost seconds at start.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.core import kv_memory

_KV_DTYPES = {"fp8": torch.float8_e4m3fn, "fp8_e4m3": torch.float8_e4m3fn, "int8": torch.int8}


def cache_torch_dtype(kv_cache_dtype: str, model_dtype: torch.dtype) -> torch.dtype:
    """The cache's element type: the model's for "auto", else fp8 e4m3 or int8."""
    if kv_cache_dtype == "auto":
        return model_dtype
    if kv_cache_dtype not in _KV_DTYPES:
        raise ValueError(f"kv_cache_dtype must be auto, fp8, fp8_e4m3 or int8; "
                         f"got {kv_cache_dtype!r}")
    return _KV_DTYPES[kv_cache_dtype]


def is_quantized(dtype: torch.dtype) -> bool:
    return dtype in (torch.float8_e4m3fn, torch.int8)


@dataclass(frozen=True)
class CacheShape:
    num_layers: int
    block_size: int
    num_kv_heads: int
    head_dim: int
    dtype: torch.dtype

    @property
    def bytes_per_block(self) -> int:
        """Bytes one block takes over all layers, scales included (engine.core.kv_memory)."""
        elem = torch.empty((), dtype=self.dtype).element_size()
        scales = kv_memory.scale_bytes("int8") if is_quantized(self.dtype) else 0
        return kv_memory.block_bytes(self.block_size, self.num_layers, self.num_kv_heads,
                                     self.head_dim, elem, scales)


class KVCache:
    """Device blocks (`device`, the engine's device, CPU included) and CPU swap blocks."""

    def __init__(self, shape: CacheShape, num_blocks: int, num_cpu_blocks: int,
                 device: torch.device) -> None:
        self.shape = shape
        self.num_blocks = num_blocks
        self.num_cpu_blocks = num_cpu_blocks
        self.device = device
        self.device_caches = self._make(num_blocks, device)
        self.device_scales = self._make_scales(num_blocks, device)
        pin = device.type == "cuda"
        self.cpu_caches = self._make(num_cpu_blocks, torch.device("cpu"), pin)
        self.cpu_scales = self._make_scales(num_cpu_blocks, torch.device("cpu"), pin)

    def _make(self, n: int, device: torch.device, pin: bool = False) -> list[torch.Tensor]:
        s = self.shape
        make = torch.zeros if device.type == "cuda" else torch.empty
        return [make((n, 2, s.block_size, s.num_kv_heads, s.head_dim), dtype=s.dtype,
                     device=device, pin_memory=pin) for _ in range(s.num_layers)]

    def _make_scales(self, n: int, device: torch.device,
                     pin: bool = False) -> list[torch.Tensor] | None:
        s = self.shape
        if not is_quantized(s.dtype):
            return None
        return [torch.ones((n, 2, s.block_size, s.num_kv_heads), dtype=torch.float32,
                           device=device, pin_memory=pin) for _ in range(s.num_layers)]

    @property
    def device_bytes(self) -> int:
        """Bytes allocated on the engine's device (caches and scales)."""
        tensors = self.device_caches + (self.device_scales or [])
        return sum(t.numel() * t.element_size() for t in tensors)

    def layer_scales(self) -> list[torch.Tensor | None]:
        return list(self.device_scales) if self.device_scales else [None] * self.shape.num_layers

    # ---- block moves (the scheduler's maps; docs/architecture.md gives the order) ----
    def swap_out(self, mapping: dict[int, int]) -> None:
        """Device block -> CPU block, for every layer."""
        self._swap(mapping, self.device_caches, self.cpu_caches)
        if self.device_scales is not None:
            self._swap(mapping, self.device_scales, self.cpu_scales)

    def swap_in(self, mapping: dict[int, int]) -> None:
        """CPU block -> device block, for every layer."""
        self._swap(mapping, self.cpu_caches, self.device_caches)
        if self.device_scales is not None:
            self._swap(mapping, self.cpu_scales, self.device_scales)

    def copy(self, pairs: list[tuple[int, int]]) -> None:
        """Copy-on-write: device block src -> dst (no dst is a source or repeats)."""
        if not pairs:
            return
        tensors = self.device_caches + (self.device_scales or [])
        if self.device.type == "cuda":
            from kernels import copy_blocks
            copy_blocks(tensors, torch.tensor(pairs, dtype=torch.int64))
            return
        src = torch.tensor([p[0] for p in pairs], dtype=torch.int64)
        dst = torch.tensor([p[1] for p in pairs], dtype=torch.int64)
        for t in tensors:
            t.index_copy_(0, dst, t.index_select(0, src))

    @staticmethod
    def _swap(mapping: dict[int, int], src: list[torch.Tensor], dst: list[torch.Tensor]) -> None:
        if not mapping:
            return
        pairs = torch.tensor(list(mapping.items()), dtype=torch.int64)
        if src[0].device.type == "cpu" and dst[0].device.type == "cpu":
            s, d = pairs[:, 0], pairs[:, 1]
            for a, b in zip(src, dst):
                b.index_copy_(0, d, a.index_select(0, s))
            return
        from kernels import swap_blocks
        for a, b in zip(src, dst):
            swap_blocks(a, b, pairs)
