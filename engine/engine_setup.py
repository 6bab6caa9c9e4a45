"""Building an engine's parts from EngineArgs: device, model, tokenizer, KV cache,
runner and sampler. Every choice made for the user is written to `log_lines`
(the engine never prints; `pagedlm generate -v` and the tests read them)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from engine.attention.backend import get_attention_backend
from engine.engine_args import EngineArgs
from engine.model_executor.kv_cache import KVCache, cache_torch_dtype
from engine.model_executor.model_loader import (build_model, cache_shape, device_kv_blocks,
                                                swap_blocks_for)
from engine.model_executor.model_runner import ModelRunner
from engine.model_executor.weights import resolve_dtype, resolve_model_source
from engine.sampling.sampler import Sampler, make_generator


@dataclass
class EngineParts:
    hf_config: Any
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    runner: ModelRunner
    sampler: Sampler
    num_gpu_blocks: int
    num_cpu_blocks: int
    max_model_len: int
    max_num_batched_tokens: int
    vocab_size: int
    eos_token_ids: frozenset[int]
    log_lines: list[str] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA device is available; pass device='cpu' "
                         "(or 'auto')")
    return torch.device(name)


def _eos_ids(config: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    value = getattr(config, "eos_token_id", None)
    if isinstance(value, int):
        ids.add(value)
    elif isinstance(value, (list, tuple)):
        ids.update(int(v) for v in value)
    if tokenizer is not None and getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    return frozenset(ids)


def _load_tokenizer(path: str | None) -> Any:
    if path is None:
        return None
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(path)


def build_engine_parts(args: EngineArgs) -> EngineParts:
    log: list[str] = []
    device = resolve_device(args.device)
    source = resolve_model_source(args.model, load_format=args.load_format,
                                  tokenizer=args.tokenizer, seed=args.seed,
                                  skip_tokenizer_init=args.skip_tokenizer_init)
    config = source.hf_config
    dtype, why = resolve_dtype(args.dtype, config, device)
    log.append(f"model {source.name} ({source.model_type}, {source.load_format} weights) on "
               f"{device}; {why}")
    backend_name = args.attention_backend
    if backend_name == "auto":
        backend_name = "triton" if device.type == "cuda" else "torch"
    cache_dtype = cache_torch_dtype(args.kv_cache_dtype, dtype)
    if device.type == "cuda" and cache_dtype == torch.float8_e4m3fn:
        major, _ = torch.cuda.get_device_capability(device)
        if major < 9 and backend_name == "triton":
            raise ValueError("kv_cache_dtype='fp8' needs an sm_90 (Hopper) GPU or newer for the "
                             "triton backend; pass kv_cache_dtype='int8' or 'auto'")
    backend = get_attention_backend(backend_name)
    model = build_model(source, backend, dtype, device, pack_cpu_gemms=args.pack_cpu_gemms)
    log.append(f"linear layers: {model.gemm_path}")
    tokenizer = _load_tokenizer(source.tokenizer_path)
    limit = int(getattr(config, "max_position_embeddings", 0) or 0) or None
    max_model_len = args.max_model_len or limit or 2048
    if limit is not None and max_model_len > limit:
        raise ValueError(f"max_model_len={max_model_len} exceeds the model's "
                         f"max_position_embeddings={limit}")
    batched = args.max_num_batched_tokens or (
        2048 if args.enable_chunked_prefill else max(max_model_len, 2048))
    shape = cache_shape(model, args.block_size, cache_dtype)
    if args.num_gpu_blocks is not None:
        num_gpu_blocks, sized = args.num_gpu_blocks, "as given"
    else:
        num_gpu_blocks = device_kv_blocks(shape, device, args.gpu_memory_utilization,
                                          args.kv_cache_memory)
        sized = "sized from memory"
    num_cpu_blocks = swap_blocks_for(shape, args.swap_space)
    kv = KVCache(shape, num_gpu_blocks, num_cpu_blocks, device)
    log.append(f"KV cache: {num_gpu_blocks} blocks of {args.block_size} tokens on {device} "
               f"({sized}; {kv.device_bytes / 2**20:.1f} MiB, {cache_dtype}), "
               f"{num_cpu_blocks} CPU swap blocks; attention backend {backend_name}")
    return EngineParts(
        hf_config=config, tokenizer=tokenizer, device=device, dtype=dtype,
        runner=ModelRunner(model, kv, device), sampler=Sampler(make_generator(args.seed, device)),
        num_gpu_blocks=num_gpu_blocks, num_cpu_blocks=num_cpu_blocks,
        max_model_len=max_model_len, max_num_batched_tokens=batched,
        vocab_size=int(config.vocab_size), eos_token_ids=_eos_ids(config, tokenizer),
        log_lines=log)
