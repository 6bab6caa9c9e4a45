"""Serving metrics from the real engine's own timestamps (issue 10, section 3), on a tiny
dummy Llama on the CPU: every token timed, arrivals kept to their plan, the same
tokens as the plain step loop; and per-run percentiles gated over runs by compare."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench.fingerprint import runs_digest, token_digest
from bench.harness import synthetic
from bench.harness.commands import compare_main
from bench.harness.results import load_run
from bench.harness.serving import summarize
from bench.harness.serving_engine import run_workload
from bench.harness.workloads import Workload, random_workload
from conformance.engine_support import TINY_LLAMA, make_engine, run_all, tokens_of, write_config

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    folder = write_config(str(tmp_path_factory.mktemp("tiny")), TINY_LLAMA)
    make_engine(folder)   # torch and the engine imported here, in setup, once for the module
    return folder


def test_every_token_is_timed_and_the_tokens_are_the_step_loops(model_dir) -> None:
    from engine import SamplingParams
    w = random_workload(6, prompt_len=10, output_len=5, rate=float("inf"), seed=3, vocab=256)
    times, digest = run_workload(make_engine(model_dir), w)
    assert [r.request_id for r in times] == [f"r{i}" for i in range(6)]
    for r in times:
        assert len(r.token_times) == 5 and all(a < b for a, b in zip(r.token_times, r.token_times[1:]))
        assert r.ttft > 0 and r.tpot is not None and r.e2el >= r.ttft
    assert len({r.arrival for r in times}) == 1                       # rate inf: all arrive at the start
    plain = run_all(make_engine(model_dir), [(f"r{i}", p, SamplingParams(temperature=0.0, max_tokens=5,
                                                                          ignore_eos=True))
                                             for i, p in enumerate(w.prompts)])
    assert digest == token_digest(tokens_of(plain)[f"r{i}"] for i in range(6))
    s = summarize(times, percentiles=(50, 99))
    assert s["p99_ttft"] >= s["median_ttft"] > 0 and s["output_token_throughput"] > 0


def test_arrivals_keep_to_their_plan(model_dir) -> None:
    offsets = [0.0, 0.04, 0.08]
    w = Workload("spaced", [[5, 6, 7, 8]] * 3, [3, 3, 3], offsets)
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        import time
        time.sleep(s)
    times, _ = run_workload(make_engine(model_dir), w, sleep=sleep)
    start = times[0].arrival
    assert [r.arrival - start for r in times] == pytest.approx(offsets, abs=1e-9)   # the plan, not the pickup
    assert all(r.token_times[0] > r.arrival for r in times)
    assert waits and all(s >= 0 for s in waits)         # the tiny model finishes early: the loop idled


def test_an_engine_with_requests_in_flight_is_refused(model_dir) -> None:
    from engine import SamplingParams
    engine = make_engine(model_dir)
    engine.add_request("x", {"prompt_token_ids": [1, 2, 3]}, SamplingParams(max_tokens=2))
    with pytest.raises(ValueError, match="already has requests in flight"):
        run_workload(engine, random_workload(1, 4, 2, rate=1.0, vocab=256))


def test_runs_digest() -> None:
    assert runs_digest(["ab", "ab", "ab"]) == "ab"
    assert runs_digest(["cd", "ab", "cd"]) == "ab|cd"
    with pytest.raises(ValueError, match="no runs"):
        runs_digest([])


NAME = "bench/bench_engine_serving.py::test_engine_serving[random]"


def _side(gen: np.random.Generator, folder, p99_scale: float = 1.0):
    docs = []
    for _ in range(6):                                   # 6 rounds (files) of 3 runs each
        doc = synthetic.document({NAME: synthetic.noisy(gen, 8.0, 3, noise=0.01)},
                                 fingerprints={NAME: {"workload": "random", "tokens": "ab"}})
        doc["benchmarks"][0]["extra_info"]["per_run_s"] = {
            "median_ttft": synthetic.noisy(gen, 0.1, 3, noise=0.02),
            "p99_ttft": synthetic.noisy(gen, 0.3 * p99_scale, 3, noise=0.02)}
        docs.append(doc)
    return synthetic.write_rounds(folder, docs)


def test_per_run_percentiles_are_gated_over_the_runs(tmp_path, capsys) -> None:
    gen = np.random.default_rng(4)
    base, same, slow = (_side(gen, tmp_path / "base"), _side(gen, tmp_path / "same"),
                        _side(gen, tmp_path / "slow", p99_scale=1.3))
    run = load_run(base)
    assert sorted(run.benchmarks) == [NAME, f"{NAME}::median_ttft", f"{NAME}::p99_ttft"]
    p99 = run.benchmarks[f"{NAME}::p99_ttft"]
    assert len(p99.rounds) == 6 and all(len(r) == 3 for r in p99.rounds)
    assert p99.fingerprint == {"workload": "random", "tokens": "ab"}      # the benchmark's own workload
    assert compare_main([str(base), str(same)]) == 0
    capsys.readouterr()
    assert compare_main([str(base), str(slow), "--json"]) == 1
    verdicts = {b["name"]: b["verdict"] for b in json.loads(capsys.readouterr().out)["benchmarks"]}
    assert verdicts[f"{NAME}::p99_ttft"] == "slower"                    # only the planted figure fails
    assert {v for k, v in verdicts.items() if k != f"{NAME}::p99_ttft"} <= {"same", "inconclusive"}


def test_bad_per_run_figures_are_refused(tmp_path, capsys) -> None:
    doc = synthetic.document({NAME: [1.0, 1.1, 1.2]})
    doc["benchmarks"][0]["extra_info"]["per_run_s"] = {"p99_ttft": 0.3}
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    assert compare_main([str(tmp_path / "bad.json"), str(tmp_path / "bad.json")]) == 2
    assert "per_run_s'] must map each figure to a list" in capsys.readouterr().err
