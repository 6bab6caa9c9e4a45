"""Shared pieces of the engine conformance: a tiny dummy model folder, engines
built over it, and a loop that runs requests to the end and checks the cache.

The tiny model is a Llama-shaped config.json in a temporary folder; the engine
loads it with load_format="dummy" (seeded weights) and no tokenizer, so prompts
are token ids. HF gets the same tensors through load_into_hf, which keeps HF the
oracle for dummy weights too.
"""
from __future__ import annotations

import json
import os
from typing import Any

TINY_LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 256,
    "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 512,
    "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": False,
    "torch_dtype": "float32", "bos_token_id": 1, "eos_token_id": 2,
}
TINY_OPT = {
    "architectures": ["OPTForCausalLM"], "model_type": "opt", "vocab_size": 256,
    "hidden_size": 64, "ffn_dim": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
    "max_position_embeddings": 512, "word_embed_proj_dim": 64, "do_layer_norm_before": True,
    "torch_dtype": "float32", "bos_token_id": 2, "eos_token_id": 2, "pad_token_id": 1,
}


def write_config(folder: str, config: dict[str, Any]) -> str:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    return folder


def make_engine(model_dir: str, **kwargs: Any):
    """An engine on the CPU over the dummy weights of `model_dir`'s config."""
    from engine.engine_args import EngineArgs
    from engine.llm_engine import LLMEngine
    args = dict(model=model_dir, load_format="dummy", skip_tokenizer_init=True, device="cpu",
                dtype="float32", num_gpu_blocks=128, swap_space=0.0, seed=0)
    args.update(kwargs)
    return LLMEngine.from_engine_args(EngineArgs(**args))


def run_all(engine, requests: list[tuple[str, list[int], Any]],
            arrivals: list[int] | None = None, max_steps: int = 10_000) -> dict[str, Any]:
    """Add requests (at the step numbers in `arrivals`, default all at once), step to
    the end; returns request id -> final RequestOutput. Checks that every block is
    free again afterwards (nothing leaked)."""
    arrivals = arrivals or [0] * len(requests)
    pending = sorted(zip(arrivals, range(len(requests))), reverse=True)
    results: dict[str, Any] = {}
    step = 0
    while pending or engine.has_unfinished_requests():
        while pending and pending[-1][0] <= step:
            _, i = pending.pop()
            rid, prompt, params = requests[i]
            engine.add_request(rid, {"prompt_token_ids": prompt}, params)
        for out in engine.step():
            if out.finished:
                results[out.request_id] = out
        step += 1
        if step > max_steps:
            raise AssertionError(f"engine did not drain in {max_steps} steps")
    assert_no_leak(engine)
    return results


def assert_no_leak(engine) -> None:
    bm = engine.scheduler.block_manager
    assert bm.num_free_gpu_blocks == engine.cache_config.num_gpu_blocks, "device blocks leaked"
    assert bm.num_free_cpu_blocks == engine.cache_config.num_cpu_blocks, "CPU blocks leaked"
    assert not engine.scheduler.requests, "requests left live"


def tokens_of(results: dict[str, Any]) -> dict[str, list[int]]:
    return {rid: list(out.outputs[0].token_ids) for rid, out in results.items()}
