"""Engine invariances (greedy, float32, a tiny dummy Llama on the CPU): a request's
tokens do not depend on prefix caching, on swap or recompute preemption, on the
chunked-prefill budget, or on what else is in the batch and when it arrived.
Every run must end with all blocks free. The reference run is the plain engine
(big cache, no caching, no chunking); test_engine_vs_hf.py holds that to HF."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from conformance.engine_support import TINY_LLAMA, make_engine, run_all, tokens_of, write_config
from engine.sampling.sampling_params import SamplingParams

VOCAB = TINY_LLAMA["vocab_size"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return write_config(str(tmp_path_factory.mktemp("tiny-llama")), TINY_LLAMA)


@pytest.fixture(scope="module")
def plain(model_dir):
    """The reference engine, reused: a request's tokens under it are the expectation."""
    return make_engine(model_dir, num_gpu_blocks=256, max_num_batched_tokens=512)


def _workload(draw_prompts: list[list[int]], max_tokens: list[int]):
    return [(f"r{i}", p, SamplingParams(temperature=0.0, max_tokens=m, ignore_eos=True))
            for i, (p, m) in enumerate(zip(draw_prompts, max_tokens))]


def _alone(plain, requests) -> dict[str, list[int]]:
    expected = {}
    for rid, prompt, params in requests:
        expected.update(tokens_of(run_all(plain, [(rid, prompt, params)])))
    return expected


shared_prefix = st.lists(st.integers(3, VOCAB - 1), min_size=0, max_size=40)
prompt_tail = st.lists(st.integers(3, VOCAB - 1), min_size=1, max_size=30)


@st.composite
def workloads(draw, max_requests: int = 5):
    prefix = draw(shared_prefix)
    n = draw(st.integers(1, max_requests))
    prompts = [prefix + draw(prompt_tail) for _ in range(n)]
    max_tokens = [draw(st.integers(1, 24)) for _ in range(n)]
    return _workload(prompts, max_tokens)


@settings(max_examples=8)
@given(requests=workloads())
def test_prefix_caching_does_not_change_tokens(model_dir, plain, requests):
    expected = _alone(plain, requests)
    cached = make_engine(model_dir, enable_prefix_caching=True, block_size=4,
                         max_num_batched_tokens=512)
    first = tokens_of(run_all(cached, requests))
    again = tokens_of(run_all(cached, [(r + "-again", p, s) for r, p, s in requests]))
    assert first == expected
    assert {r[:-len("-again")]: t for r, t in again.items()} == expected
    if any(len(p) > 8 for _, p, _ in requests):
        assert cached.get_stats()["prefix_cache_hit_rate"] > 0


@settings(max_examples=6)
@given(requests=workloads(max_requests=6), mode=st.sampled_from(["recompute", "swap"]))
def test_preemption_does_not_change_tokens(model_dir, plain, requests, mode):
    expected = _alone(plain, requests)
    # block 4 and few blocks: the running sequences outgrow the cache and preempt.
    longest = max(len(p) + s.max_tokens for _, p, s in requests)
    blocks = max(-(-longest // 4) + 1, 6)
    engine = make_engine(model_dir, block_size=4, num_gpu_blocks=blocks, preemption_mode=mode,
                         swap_space=0.01 if mode == "swap" else 0.0, max_num_batched_tokens=512)
    assert tokens_of(run_all(engine, requests)) == expected


def test_preemption_happens_in_both_modes(model_dir, plain):
    """A fixed workload that must preempt (so the property above is not vacuous)."""
    requests = _workload([[5 + i] * 10 for i in range(5)], [40] * 5)
    expected = _alone(plain, requests)
    for mode in ("recompute", "swap"):
        engine = make_engine(model_dir, block_size=4, num_gpu_blocks=30, preemption_mode=mode,
                             swap_space=0.01 if mode == "swap" else 0.0)
        assert tokens_of(run_all(engine, requests)) == expected
        assert engine.get_stats()["preemptions"][mode] > 0


@settings(max_examples=6)
@given(requests=workloads(), budget=st.sampled_from([1, 4, 16]))
def test_chunked_prefill_budget_does_not_change_tokens(model_dir, plain, requests, budget):
    expected = _alone(plain, requests)
    engine = make_engine(model_dir, enable_chunked_prefill=True, max_num_batched_tokens=budget,
                         block_size=8)
    assert tokens_of(run_all(engine, requests)) == expected


@settings(max_examples=6)
@given(requests=workloads(max_requests=6), data=st.data())
def test_batch_mix_and_arrival_order_do_not_change_tokens(model_dir, plain, requests, data):
    expected = _alone(plain, requests)
    order = data.draw(st.permutations(range(len(requests))))
    arrivals = data.draw(st.lists(st.integers(0, 6), min_size=len(requests),
                                  max_size=len(requests)))
    max_seqs = data.draw(st.integers(1, 4))
    engine = make_engine(model_dir, max_num_seqs=max_seqs, max_num_batched_tokens=64,
                         enable_chunked_prefill=True)
    shuffled = [requests[i] for i in order]
    assert tokens_of(run_all(engine, shuffled, arrivals)) == expected
