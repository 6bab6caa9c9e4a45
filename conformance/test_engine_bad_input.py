"""Bad input: a clear ValueError at add_request (nothing queued), or a finished
output with finish_reason "ignored" and the reason; never a hang, never a deep
traceback. Every case runs while other requests are in flight: they must finish
with the tokens they get alone, and no block may leak."""
from __future__ import annotations

import json
import os

import pytest

from conformance.engine_support import (TINY_LLAMA, assert_no_leak, make_engine, run_all,
                                        tokens_of, write_config)
from engine.engine_args import EngineArgs
from engine.sampling.sampling_params import SamplingParams

GREEDY = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
GOOD = [("good-0", [5, 6, 7, 8, 9], GREEDY), ("good-1", [10, 11, 12], GREEDY)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return write_config(str(tmp_path_factory.mktemp("tiny")), TINY_LLAMA)


@pytest.fixture(scope="module")
def expected(model_dir) -> dict[str, list[int]]:
    return tokens_of(run_all(make_engine(model_dir), GOOD))


def _serve_with(engine, expected, bad) -> dict:
    """Start the good requests, run a step, apply `bad(engine)`, drain; the good
    requests must end as they do alone. Returns the finished outputs."""
    for rid, prompt, params in GOOD:
        engine.add_request(rid, {"prompt_token_ids": prompt}, params)
    results = {o.request_id: o for o in engine.step() if o.finished}
    bad(engine)
    while engine.has_unfinished_requests():
        results.update({o.request_id: o for o in engine.step() if o.finished})
    assert {rid: list(results[rid].outputs[0].token_ids) for rid, _, _ in GOOD} == expected
    assert_no_leak(engine)
    return results


def _raises(match: str, request_id: str, prompt, params=GREEDY):
    def bad(engine):
        live = engine.get_num_unfinished_requests()
        with pytest.raises(ValueError, match=match):
            engine.add_request(request_id, prompt, params)
        assert engine.get_num_unfinished_requests() == live      # nothing was queued
    return bad


@pytest.mark.parametrize("prompt, match", [
    ({"prompt_token_ids": []}, "prompt is empty"),
    ({"prompt_token_ids": [5, -1, 7]}, r"token ids \[-1\] lie outside the vocabulary"),
    ({"prompt_token_ids": [5, 256]}, r"token ids \[256\] lie outside the vocabulary"),
    ({"prompt_token_ids": [5, "x"]}, "must be a list of ints"),
    ("some text", "needs a tokenizer"),
    (42, "prompt must be a string or a dict"),
], ids=["empty", "negative-id", "id-past-vocab", "not-ints", "text-without-tokenizer",
        "wrong-type"])
def test_bad_prompt_raises_and_others_finish(model_dir, expected, prompt, match):
    _serve_with(make_engine(model_dir), expected, _raises(match, "bad", prompt))


def test_duplicate_live_request_id_raises(model_dir, expected):
    _serve_with(make_engine(model_dir), expected,
                _raises("already live", "good-0", {"prompt_token_ids": [1, 2]}))


def test_bad_params_raise(model_dir, expected):
    def bad(engine):
        with pytest.raises(ValueError, match="params must be SamplingParams"):
            engine.add_request("bad", {"prompt_token_ids": [3]}, {"temperature": 0})
        with pytest.raises(ValueError, match="temperature"):
            engine.add_request("bad", {"prompt_token_ids": [3]}, SamplingParams(temperature=-1))
        with pytest.raises(ValueError, match="n=5 is larger than max_num_seqs=4"):
            engine.add_request("bad", {"prompt_token_ids": [3]}, SamplingParams(n=5))
        with pytest.raises(ValueError, match="logprobs=300 exceeds the vocabulary"):
            engine.add_request("bad", {"prompt_token_ids": [3]}, SamplingParams(logprobs=300))
    _serve_with(make_engine(model_dir, max_num_seqs=4), expected, bad)


def test_abort_of_unknown_id_is_a_reported_noop(model_dir, expected):
    def bad(engine):
        assert engine.abort_request("no-such-request") == []
        assert engine.abort_request(["no-such", "good-1-not"]) == []
    _serve_with(make_engine(model_dir), expected, bad)


def test_abort_of_a_live_request_frees_it(model_dir, expected):
    def bad(engine):
        engine.add_request("victim", {"prompt_token_ids": [4] * 20}, GREEDY)
        engine.step()
        assert engine.abort_request("victim") == ["victim"]
        assert engine.abort_request("victim") == []               # a second abort is a no-op
    results = _serve_with(make_engine(model_dir), expected, bad)
    assert "victim" not in results


@pytest.mark.parametrize("engine_kwargs, prompt, params, reason", [
    (dict(max_model_len=32), [3] * 40, GREEDY, "more than max_model_len=32"),
    (dict(num_gpu_blocks=4, block_size=4), [3] * 12,
     SamplingParams(temperature=0.0, max_tokens=20, ignore_eos=True),
     "more than the GPU pool can ever hold"),
    (dict(max_num_batched_tokens=16), [3] * 20, GREEDY, "more than max_num_batched_tokens=16"),
], ids=["longer-than-max-model-len", "never-fits-the-cache", "longer-than-the-budget"])
def test_infeasible_request_is_ignored_with_its_reason(model_dir, engine_kwargs, prompt,
                                                       params, reason):
    engine = make_engine(model_dir, **engine_kwargs)
    small = [("ok", [5, 6], SamplingParams(temperature=0.0, max_tokens=2, ignore_eos=True)),
             ("bad", prompt, params)]
    results = run_all(engine, small)
    out = results["bad"].outputs[0]
    assert out.finish_reason == "ignored" and reason in out.stop_reason
    assert out.token_ids == [] and results["bad"].finished
    assert results["ok"].outputs[0].finish_reason == "length"


@pytest.mark.parametrize("kwargs, match", [
    (dict(model="no-such-model"), "not a preset, not a local folder"),
    (dict(dtype="float64"), "dtype must be one of"),
    (dict(kv_cache_dtype="fp4"), "kv_cache_dtype must be one of"),
    (dict(device="cuda"), "no CUDA device"),
    (dict(block_size=0), "block_size must be a positive int"),
    (dict(gpu_memory_utilization=1.5), "gpu_memory_utilization"),
], ids=["unknown-model", "bad-dtype", "bad-kv-dtype", "cuda-absent", "bad-block-size",
        "bad-utilization"])
def test_bad_engine_arguments_raise(model_dir, kwargs, match):
    if kwargs.get("device") == "cuda":
        import torch
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match=match):
        make_engine(model_dir, **kwargs)


def test_unknown_engine_argument_names_it():
    with pytest.raises(ValueError, match="unknown engine argument.*max_num_seq\\b"):
        EngineArgs.from_kwargs(max_num_seq=4)


def test_unsupported_architecture_lists_the_supported(tmp_path):
    folder = write_config(str(tmp_path), {**TINY_LLAMA, "architectures": ["GPT2LMHeadModel"],
                                          "model_type": "gpt2"})
    with pytest.raises(ValueError, match="llama.*opt|opt.*llama"):
        make_engine(folder)


def test_folder_without_weights_raises(tmp_path):
    folder = write_config(str(tmp_path), TINY_LLAMA)
    with pytest.raises(ValueError, match="(?i)weights|safetensors"):
        make_engine(folder, load_format="auto")
    assert json.load(open(os.path.join(folder, "config.json")))["model_type"] == "llama"
