"""From a ModelSource to a model on its device, and the KV cache sized for it."""
from __future__ import annotations

import math

import torch

from engine.attention.backend import AttentionBackend
from engine.model_executor.kv_cache import CacheShape
from engine.model_executor.layers import pack_gemms
from engine.model_executor.models import get_model_class
from engine.model_executor.weights import ModelSource


def build_model(source: ModelSource, backend: AttentionBackend, dtype: torch.dtype,
                device: torch.device, pack_cpu_gemms: bool = True) -> torch.nn.Module:
    """Our model for the source's config, its weights loaded, cast and moved. On CPU
    in float32 its GEMMs then run from oneDNN-packed weights (`pack_cpu_gemms`);
    `model.gemm_path` says which path serves them and why."""
    cls = get_model_class(source.hf_config)
    # Built on the target device (its buffers, the rotary tables among them, are
    # computed there), cast, then filled: load_weights copies in place and casts.
    with torch.device(device):
        model = cls(source.hf_config, backend)
    model = model.to(dtype)
    model.load_weights(source.weights())
    model.gemm_path = "torch F.linear (pack_cpu_gemms off)"
    if pack_cpu_gemms:
        reason = pack_gemms(model)
        model.gemm_path = "oneDNN packed weights" if reason is None else f"torch F.linear ({reason})"
    return model.eval()


def cache_shape(model: torch.nn.Module, block_size: int, cache_dtype: torch.dtype) -> CacheShape:
    return CacheShape(num_layers=model.num_layers, block_size=block_size,
                      num_kv_heads=model.num_kv_heads, head_dim=model.head_dim, dtype=cache_dtype)


def device_kv_blocks(shape: CacheShape, device: torch.device, utilization: float,
                     cpu_budget: int) -> int:
    """KV blocks for the engine's device: on CPU `cpu_budget` bytes x utilization;
    on CUDA what is left of utilization x the card after the weights (and a fixed
    reserve for activations), measured now."""
    per_block = shape.bytes_per_block
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        used = total - free
        activations = 1 << 30
        budget = int(total * utilization) - used - activations
        where = f"utilization {utilization} of {total / 2**30:.1f} GiB, {used / 2**30:.1f} GiB in use"
    else:
        budget = int(cpu_budget * utilization)
        where = f"kv_cache_memory {cpu_budget / 2**30:.2f} GiB x utilization {utilization}"
    blocks = budget // per_block if budget > 0 else 0
    if blocks < 1:
        raise ValueError(f"no room for a single KV block ({per_block} B) on {device}: {where}; "
                         f"raise gpu_memory_utilization or kv_cache_memory, or pass num_gpu_blocks")
    return blocks


def swap_blocks_for(shape: CacheShape, swap_space_gib: float) -> int:
    """CPU swap blocks that `swap_space_gib` GiB hold."""
    return math.floor(swap_space_gib * (1 << 30) / shape.bytes_per_block)
