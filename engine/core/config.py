"""Scheduler and KV-cache configuration, validated on construction. No torch."""
from __future__ import annotations

from dataclasses import dataclass

PREEMPTION_MODES = ("recompute", "swap")


def _positive_int(name: str, value: object) -> None:
    # bool is an int subclass; True as a block size is a bug, not a 1.
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class SchedulerConfig:
    """Per-step budgets and policies.

    max_num_seqs: sequences running at once (and so scheduled in one step).
    max_num_batched_tokens: tokens (prefill + decode) one step may compute.
    max_model_len: positions a sequence may use; a prompt longer than this is
        ignored, and a sequence finishes once its next token would need position
        max_model_len (vLLM's rule).
    enable_chunked_prefill: split prompts across steps under the token budget.
    preemption_mode: "recompute" (drop KV, re-prefill later) or "swap" (to CPU;
        falls back to recompute when the CPU pool has no room).
    """

    max_num_seqs: int = 256
    max_num_batched_tokens: int = 2048
    max_model_len: int = 2048
    enable_chunked_prefill: bool = False
    preemption_mode: str = "recompute"

    def __post_init__(self) -> None:
        _positive_int("max_num_seqs", self.max_num_seqs)
        _positive_int("max_num_batched_tokens", self.max_num_batched_tokens)
        _positive_int("max_model_len", self.max_model_len)
        if not isinstance(self.enable_chunked_prefill, bool):
            raise ValueError(
                f"enable_chunked_prefill must be a bool, got {self.enable_chunked_prefill!r}")
        if self.preemption_mode not in PREEMPTION_MODES:
            raise ValueError(f"preemption_mode must be one of {PREEMPTION_MODES}, "
                             f"got {self.preemption_mode!r}")


@dataclass(frozen=True)
class CacheConfig:
    """The paged KV cache the block manager hands out.

    watermark: fraction of GPU blocks kept free when admitting or swapping in,
        so running sequences can grow without immediate preemption.
    """

    block_size: int = 16
    num_gpu_blocks: int = 1024
    num_cpu_blocks: int = 0
    enable_prefix_caching: bool = False
    watermark: float = 0.01

    def __post_init__(self) -> None:
        _positive_int("block_size", self.block_size)
        _positive_int("num_gpu_blocks", self.num_gpu_blocks)
        if (isinstance(self.num_cpu_blocks, bool) or not isinstance(self.num_cpu_blocks, int)
                or self.num_cpu_blocks < 0):
            raise ValueError(
                f"num_cpu_blocks must be a non-negative int, got {self.num_cpu_blocks!r}")
        if not isinstance(self.enable_prefix_caching, bool):
            raise ValueError(
                f"enable_prefix_caching must be a bool, got {self.enable_prefix_caching!r}")
        if (isinstance(self.watermark, bool) or not isinstance(self.watermark, (int, float))
                or not 0.0 <= self.watermark < 1.0):
            raise ValueError(f"watermark must be a float in [0, 1), got {self.watermark!r}")
