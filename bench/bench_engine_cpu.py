"""Offline throughput on the CPU: the real SmolLM2 (float32) through pagedlm against
HF `generate` on the same prompts in the same run, interleaved round by round.

Workload (the engine issue's): 16 chat prompts x 64 new tokens, greedy,
ignore_eos; batch 16 (HF: one left-padded batch, SDPA) and batch 1. Printed per
batch: tokens/s of both, the ratio, the step's limit on this machine (weight
bytes over a read bandwidth and FLOPs over a matmul rate, both measured here in
the same run), and where our step time goes (engine phases). The fingerprint
holds the workload and a digest of the tokens we produced.
Run: `make bench` or `pytest bench/bench_engine_cpu.py --benchmark-only -s`.
"""
from __future__ import annotations

import time

import pytest
import torch

from bench.fingerprint import fingerprint, runs_digest, token_digest

QUESTIONS = [
    "What is the capital of France?", "Explain photosynthesis in one paragraph.",
    "Write a haiku about the sea.", "How do vaccines work?", "Give me three tips for sleeping well.",
    "What is a prime number?", "Summarise the plot of Hamlet.", "Why is the sky blue?",
    "How does a hash table work?", "What causes the seasons on Earth?",
    "Translate 'good morning' into Spanish and French.", "What is machine learning?",
    "Describe a healthy breakfast.", "How do airplanes stay in the air?",
    "What is the difference between weather and climate?", "Name the planets of the solar system.",
]
NEW_TOKENS = 64
ROUNDS = 3


def _measured_limits() -> dict[str, float]:
    """Read bandwidth (a 512 MiB float32 sum) and the fp32 matmul rate, here and now."""
    x = torch.ones(128 << 20)
    x.sum()
    t = time.perf_counter()
    for _ in range(3):
        x.sum()
    read_bw = 3 * x.numel() * 4 / (time.perf_counter() - t)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    t = time.perf_counter()
    for _ in range(5):
        a @ b
    flops = 5 * 2 * 1024 ** 3 / (time.perf_counter() - t)
    return {"read_GBps": read_bw / 1e9, "matmul_GFLOPs": flops / 1e9}


@pytest.fixture(scope="module")
def setup():
    from transformers import AutoModelForCausalLM

    from engine import LLM
    from engine.model_executor.weights.smollm2 import smollm2_model_dir
    # device="cpu" even where CUDA is there: HF runs on the CPU, so must we (a GPU engine
    # against a CPU peer would time something else under this benchmark's name)
    llm = LLM(model="smollm2-135m", dtype="float32", swap_space=0.01, num_gpu_blocks=512, device="cpu")
    tok = llm.get_tokenizer()
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                       tokenize=True, return_dict=False) for q in QUESTIONS]
    hf = AutoModelForCausalLM.from_pretrained(smollm2_model_dir(), dtype=torch.float32,
                                              attn_implementation="sdpa").eval()
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = tok.pad_token_id or 0
    return llm, hf, [list(p) for p in prompts]


def _ours(llm, prompts) -> tuple[float, list[list[int]]]:
    from engine import SamplingParams
    params = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, ignore_eos=True)
    t = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    return time.perf_counter() - t, [list(o.outputs[0].token_ids) for o in outs]


def _hf(hf, prompts, pad_id: int) -> tuple[float, list[list[int]]]:
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    t = time.perf_counter()
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask, max_new_tokens=NEW_TOKENS,
                          min_new_tokens=NEW_TOKENS, do_sample=False)
    return time.perf_counter() - t, out[:, width:].tolist()


@pytest.mark.parametrize("batch", [16, 1])
def test_engine_throughput_vs_hf(benchmark, setup, batch):
    llm, hf, prompts = setup
    prompts = prompts[:batch]
    pad = hf.generation_config.pad_token_id
    phases = llm.llm_engine._processor.phase_seconds
    _ours(llm, prompts[:1])                               # warm both once
    _hf(hf, prompts[:1], pad)
    ours_s, hf_s, ours_tokens, hf_tokens = [], [], [], []

    def hf_round():                # pytest-benchmark's untimed setup: HF runs between our rounds
        for k in phases:
            phases[k] = 0.0
        s, toks = _hf(hf, prompts, pad)
        hf_s.append(s)
        hf_tokens.append(toks)
        return (), {}

    def ours_round():
        s, toks = _ours(llm, prompts)
        ours_s.append(s)
        ours_tokens.append(toks)

    benchmark.pedantic(ours_round, setup=hf_round, rounds=ROUNDS, iterations=1)
    same = all(a == b for a, b in zip(ours_tokens, hf_tokens))
    tokens = batch * NEW_TOKENS
    ours_tps = tokens / sorted(ours_s)[ROUNDS // 2]
    hf_tps = tokens / sorted(hf_s)[ROUNDS // 2]
    limits = _measured_limits()
    params = sum(p.numel() for p in hf.parameters())
    weight_bytes = params * 4
    step_s = max(weight_bytes / (limits["read_GBps"] * 1e9),
                 2 * params * batch / (limits["matmul_GFLOPs"] * 1e9))
    limit_tps = batch / step_s
    total = sum(phases.values()) or 1.0
    benchmark.extra_info.update({
        "batch": batch, "new_tokens": NEW_TOKENS, "ours_tokens_per_s": round(ours_tps, 2),
        "hf_tokens_per_s": round(hf_tps, 2), "ratio_vs_hf": round(ours_tps / hf_tps, 3),
        "limit_tokens_per_s": round(limit_tps, 1), "share_of_limit": round(ours_tps / limit_tps, 3),
        "greedy_tokens_equal_hf": same, **{k: round(v, 2) for k, v in limits.items()},
        "phase_share": {k: round(v / total, 3) for k, v in phases.items()},
        "workload": {"prompts": batch, "prompt_tokens": sum(map(len, prompts)),
                     "model": "smollm2-135m", "dtype": "float32"},
        "fingerprint": fingerprint(model="smollm2-135m", dtype="float32", batch=batch,
                                   prompt_tokens=sum(map(len, prompts)), new_tokens=NEW_TOKENS, greedy=True,
                                   rounds=ROUNDS, tokens=runs_digest(token_digest(t) for t in ours_tokens))})
    print(f"\nbatch {batch}: pagedlm {ours_tps:.1f} tok/s, HF generate {hf_tps:.1f} tok/s, "
          f"ratio {ours_tps / hf_tps:.2f}x; limit {limit_tps:.0f} tok/s "
          f"(read {limits['read_GBps']:.1f} GB/s, matmul {limits['matmul_GFLOPs']:.0f} GFLOP/s): "
          f"{100 * ours_tps / limit_tps:.0f}% of it; tokens equal HF: {same}")
    print("  our step time: " + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in phases.items()))
