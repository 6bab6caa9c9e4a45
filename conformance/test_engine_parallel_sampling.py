"""Parallel sampling (n > 1) through the engine: the prompt is computed once and
its blocks shared by the n sequences (copy-on-write on the partial last block);
greedy copies equal the n = 1 output; seeded groups repeat whatever else runs and
under preemption; a stop string ends only its own sequence; nothing leaks."""
from __future__ import annotations

import pytest

from conformance.engine_support import TINY_LLAMA, make_engine, run_all, write_config
from engine.sampling.sampling_params import SamplingParams

PROMPT = [5, 6, 7, 8, 9, 10, 11]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return write_config(str(tmp_path_factory.mktemp("tiny")), TINY_LLAMA)


def _texts(out) -> list[list[int]]:
    return [c.token_ids for c in sorted(out.outputs, key=lambda c: c.index)]


def test_greedy_group_copies_equal_the_single_output(model_dir):
    engine = make_engine(model_dir, block_size=4)
    one = run_all(engine, [("one", PROMPT, SamplingParams(temperature=0.0, max_tokens=9,
                                                          ignore_eos=True))])["one"]
    group = run_all(engine, [("g", PROMPT, SamplingParams(n=3, temperature=0.0, max_tokens=9,
                                                          ignore_eos=True))])["g"]
    assert [c.index for c in group.outputs] == [0, 1, 2]
    assert _texts(group) == [one.outputs[0].token_ids] * 3
    assert all(c.finish_reason == "length" for c in group.outputs)


def test_prompt_computed_once_for_the_group(model_dir):
    engine = make_engine(model_dir, block_size=4)
    run_all(engine, [("g", PROMPT, SamplingParams(n=4, temperature=1.0, seed=0, max_tokens=3,
                                                  ignore_eos=True))])
    assert engine.get_stats()["prompt_tokens"] == len(PROMPT)


def _seeded(n=3):
    return SamplingParams(n=n, temperature=1.0, seed=11, max_tokens=12, ignore_eos=True)


def test_seeded_group_repeats_alone_in_a_batch_and_under_preemption(model_dir):
    alone = run_all(make_engine(model_dir, block_size=4), [("g", PROMPT, _seeded())])["g"]
    samples = _texts(alone)
    assert len({tuple(t) for t in samples}) == 3                  # three different draws
    others = [(f"o{i}", [20 + i] * (3 + 2 * i), SamplingParams(temperature=0.7, max_tokens=15,
                                                                 ignore_eos=True))
              for i in range(4)]
    mixed = run_all(make_engine(model_dir, block_size=4), others[:2] + [("g", PROMPT, _seeded())]
                    + others[2:], arrivals=[0, 0, 1, 1, 2])
    assert _texts(mixed["g"]) == samples
    for mode in ("recompute", "swap"):
        tight = make_engine(model_dir, block_size=4, num_gpu_blocks=16, preemption_mode=mode,
                            swap_space=0.01 if mode == "swap" else 0.0)
        res = run_all(tight, others + [("g", PROMPT, _seeded())])
        assert _texts(res["g"]) == samples, mode
        assert tight.get_stats()["preemptions"][mode] > 0, mode


def test_stop_string_ends_only_its_sequence(model_dir):
    # Without a tokenizer there is no text: a stop token shows the same per-sequence
    # ending (the engine's stop strings end a sequence through the same call).
    engine = make_engine(model_dir, block_size=4)
    alone = run_all(engine, [("g", PROMPT, _seeded())])["g"]
    first = _texts(alone)[0]
    stop = first[4]
    params = SamplingParams(n=3, temperature=1.0, seed=11, max_tokens=12, ignore_eos=True,
                            stop_token_ids=[stop])
    out = run_all(engine, [("s", PROMPT, params)])["s"]
    outputs = sorted(out.outputs, key=lambda c: c.index)
    # Draws before the first stop are untouched (the group shares one generator,
    # consumed in sequence order, so later draws may shift once one has ended).
    assert outputs[0].token_ids == first[:5]
    for c in outputs:
        if stop in c.token_ids:
            assert c.token_ids.index(stop) == len(c.token_ids) - 1
            assert c.finish_reason == "stop" and c.stop_reason == stop
        else:
            assert len(c.token_ids) == 12 and c.finish_reason == "length"
    assert any(c.finish_reason == "length" for c in outputs) or all(
        stop in c.token_ids for c in outputs)
