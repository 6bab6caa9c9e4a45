"""The user-facing entry points on the real SmolLM2: the integration project
(examples/trace_request.py, only its import line and model name changed), the
`pagedlm trace` and `pagedlm generate` commands, and LLM.generate/chat."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_seed_integration_project_runs():
    proc = _run(["examples/trace_request.py"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "GPU blocks:" in out and "Block size: 16" in out
    assert "Total tokens generated: 5" in out
    assert "Components traversed" in out


def test_pagedlm_trace_shows_real_block_tables_and_steps():
    proc = _run(["-m", "engine.entrypoints.cli", "trace", "Hello world", "--max-tokens", "3",
                 "--background", "2", "--num-gpu-blocks", "64", "--json"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = json.loads(proc.stdout)["events"]
    kinds = [e["event"] for e in events]
    assert kinds.count("request_added") == 3
    first = next(e for e in events if e["event"] == "step_scheduled")
    traced = [r for r in first["scheduled"] if r["request_id"] == "traced"]
    assert traced and traced[0]["kind"] == "prefill"
    # The block tables are the block manager's: disjoint blocks across sequences.
    tables = [b for t in first["block_tables"].values() for b in t]
    assert len(tables) == len(set(tables)) and all(0 <= b < 64 for b in tables)
    executed = next(e for e in events if e["event"] == "step_executed")
    assert len(executed["input_ids"]) == first["num_batched_tokens"]
    samples = [s for e in events if e["event"] == "tokens_sampled" for s in e["samples"]
               if s["request_id"] == "traced"]
    assert len(samples) == 3
    finished = [e for e in events if e["event"] == "request_finished"]
    assert {e["request_id"] for e in finished} == {"traced", "background-0", "background-1"}


def test_pagedlm_trace_text_names_every_layer():
    proc = _run(["-m", "engine.entrypoints.cli", "trace", "Hello world", "--max-tokens", "2",
                 "--num-gpu-blocks", "32"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    for heading in ("LAYER 1: API CALL", "Tokenization:", "Request created", "LAYER 2: SCHEDULING",
                    "Block table of seq", "LAYER 3: MODEL EXECUTION", "Sampling: seq",
                    "Sequence update", "COMPLETION"):
        assert heading in proc.stdout, heading


def test_pagedlm_generate_streams_paris():
    proc = _run(["-m", "engine.entrypoints.cli", "generate", "The capital of France is",
                 "--max-tokens", "3", "--num-gpu-blocks", "32", "--json"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["outputs"][0]["text"].startswith(" Paris")


def test_pagedlm_generate_bad_argument_is_one_line():
    proc = _run(["-m", "engine.entrypoints.cli", "generate", "x", "--temperature", "-1",
                 "--num-gpu-blocks", "8"])
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "temperature" in proc.stderr


@pytest.fixture(scope="module")
def llm():
    from engine import LLM
    return LLM(model="smollm2-135m", num_gpu_blocks=128, swap_space=0.01)


def test_llm_generate_keeps_input_order_and_mixed_params(llm):
    from engine import SamplingParams
    prompts = ["The capital of France is", {"prompt_token_ids": [504, 2988, 314]}, "1, 2, 3,"]
    params = [SamplingParams(temperature=0.0, max_tokens=4),
              SamplingParams(temperature=0.8, seed=3, max_tokens=5),
              SamplingParams(temperature=0.0, max_tokens=6, stop=[","])]
    outs = llm.generate(prompts, params, use_tqdm=False)
    assert [o.prompt for o in outs] == ["The capital of France is", None, "1, 2, 3,"]
    assert outs[0].outputs[0].text.startswith(" Paris")
    assert len(outs[1].outputs[0].token_ids) == 5
    assert "," not in outs[2].outputs[0].text and outs[2].outputs[0].stop_reason == ","
    again = llm.generate([prompts[1]], params[1], use_tqdm=False)
    assert again[0].outputs[0].token_ids == outs[1].outputs[0].token_ids     # seeded
    assert llm.llm_engine.cache_config.num_gpu_blocks == 128
    assert llm.llm_engine.tokenizer.encode("Hello") == llm.get_tokenizer().encode("Hello")


def test_llm_chat_uses_the_template(llm):
    from engine import SamplingParams
    out = llm.chat([{"role": "user", "content": "What is the capital of France?"}],
                   SamplingParams(temperature=0.0, max_tokens=12), use_tqdm=False)
    assert "Paris" in out[0].outputs[0].text


def test_llm_rejects_a_bad_prompt_without_leaving_others(llm):
    from engine import SamplingParams
    with pytest.raises(ValueError, match="outside the vocabulary"):
        llm.generate(["fine", {"prompt_token_ids": [10**7]}], SamplingParams(max_tokens=2),
                     use_tqdm=False)
    assert not llm.llm_engine.has_unfinished_requests()


def test_llm_parallel_sampling_with_stop_strings(llm):
    from engine import SamplingParams
    params = SamplingParams(n=3, temperature=0.9, seed=2, max_tokens=20, stop=["."])
    out = llm.generate(["Tell me about Paris"], params, use_tqdm=False)[0]
    assert sorted(c.index for c in out.outputs) == [0, 1, 2]
    for c in out.outputs:
        assert "." not in c.text
        if c.finish_reason == "stop" and c.stop_reason == ".":
            assert len(c.token_ids) <= 20
    again = llm.generate(["Tell me about Paris"], params, use_tqdm=False)[0]
    assert [c.text for c in again.outputs] == [c.text for c in out.outputs]
    assert not llm.llm_engine.has_unfinished_requests()
