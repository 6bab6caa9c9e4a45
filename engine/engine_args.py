"""EngineArgs: the engine's settings under vLLM's names, validated once.

`LLM(model=..., **kwargs)` and `LLMEngine.from_engine_args` take these. Settings
that belong to the scheduler and the block manager become engine.core configs;
the rest (model, dtype, device, cache sizing) go to the model executor.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

DTYPES = ("auto", "float32", "float16", "bfloat16")
KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "int8")
LOAD_FORMATS = ("auto", "safetensors", "dummy")
DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("auto", "torch", "triton")
# CPU KV budget before gpu_memory_utilization scales it (vLLM's CPU default is 4 GiB).
DEFAULT_CPU_KV_CACHE_MEMORY = 4 << 30


def _check_positive_int(name: str, value: object, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


@dataclass
class EngineArgs:
    """Engine settings (vLLM's names and defaults where vLLM has them).

    model: a preset (smollm2-135m, opt-125m, llama-3-8b), a local HF folder, or a hub
        id present in the local HF cache. tokenizer: a folder or id (default: the model's).
    num_gpu_blocks: KV blocks of the device the model runs on (CPU included);
        None sizes the cache from memory: on CUDA gpu_memory_utilization of the card,
        on CPU kv_cache_memory bytes scaled by gpu_memory_utilization.
    swap_space: GiB of CPU blocks for swap preemption.
    attention_backend: "auto" = triton on CUDA, torch on CPU.
    pack_cpu_gemms: on CPU in float32, run the linear layers from oneDNN-packed
        weights (faster at decode batch sizes; the packed copies sit beside the
        weights, so the model takes about twice its weight bytes); False keeps
        torch's F.linear.
    """

    model: str = "smollm2-135m"
    tokenizer: str | None = None
    skip_tokenizer_init: bool = False
    dtype: str = "auto"
    seed: int = 0
    block_size: int = 16
    max_model_len: int | None = None
    max_num_seqs: int = 256
    max_num_batched_tokens: int | None = None
    enable_chunked_prefill: bool = False
    gpu_memory_utilization: float = 0.9
    swap_space: float = 4.0
    enable_prefix_caching: bool = False
    preemption_mode: str | None = None
    kv_cache_dtype: str = "auto"
    enforce_eager: bool = False
    load_format: str = "auto"
    device: str = "auto"
    num_gpu_blocks: int | None = None
    kv_cache_memory: int = DEFAULT_CPU_KV_CACHE_MEMORY
    attention_backend: str = "auto"
    pack_cpu_gemms: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model must be a non-empty string, got {self.model!r}")
        _check_choice("dtype", self.dtype, DTYPES)
        _check_choice("kv_cache_dtype", self.kv_cache_dtype, KV_CACHE_DTYPES)
        _check_choice("load_format", self.load_format, LOAD_FORMATS)
        _check_choice("device", self.device, DEVICES)
        _check_choice("attention_backend", self.attention_backend, BACKENDS)
        if self.preemption_mode is not None:
            _check_choice("preemption_mode", self.preemption_mode, ("recompute", "swap"))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int, got {self.seed!r}")
        _check_positive_int("block_size", self.block_size)
        _check_positive_int("max_model_len", self.max_model_len, allow_none=True)
        _check_positive_int("max_num_seqs", self.max_num_seqs)
        _check_positive_int("max_num_batched_tokens", self.max_num_batched_tokens, allow_none=True)
        _check_positive_int("num_gpu_blocks", self.num_gpu_blocks, allow_none=True)
        _check_positive_int("kv_cache_memory", self.kv_cache_memory)
        for name in ("enable_chunked_prefill", "enable_prefix_caching", "enforce_eager",
                     "skip_tokenizer_init", "pack_cpu_gemms"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        util = self.gpu_memory_utilization
        if isinstance(util, bool) or not isinstance(util, (int, float)) or not 0 < util <= 1:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {util!r}")
        swap = self.swap_space
        if isinstance(swap, bool) or not isinstance(swap, (int, float)) or swap < 0:
            raise ValueError(f"swap_space must be a non-negative number of GiB, got {swap!r}")

    @classmethod
    def field_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_kwargs(cls, **kwargs: object) -> "EngineArgs":
        """EngineArgs from keyword arguments; an unknown name is a ValueError that
        lists the known ones (a typo must not be silently ignored)."""
        unknown = sorted(set(kwargs) - cls.field_names())
        if unknown:
            raise ValueError(f"unknown engine argument(s) {', '.join(unknown)}; known: "
                             f"{', '.join(sorted(cls.field_names()))}")
        return cls(**kwargs)  # type: ignore[arg-type]
