"""The gate's calibration on synthetic pytest-benchmark JSON with a known truth (issue 10,
section 2): A/A passes, a planted 20 % slowdown fails and names only its benchmark,
3 % under a 5 % threshold passes, and on 30 benchmarks of pure noise the suite
correction is what keeps the gate quiet."""
from __future__ import annotations

import json

import numpy as np

from bench.harness import synthetic
from bench.harness.commands import compare_main
from bench.harness.compare import Settings, compare_runs
from bench.harness.results import load_run

SUITE = {f"bench/bench_x.py::test_{k}": m for k, m in
         [("a", 2e-4), ("b", 5e-4), ("c", 1e-3), ("d", 3e-3), ("e", 8e-3), ("f", 2e-2)]}


def _sides(tmp_path, seed: int, slowdown: dict[str, float] | None = None, rounds: int = 8, n: int = 30,
           noise: float = 0.03, round_noise: float = 0.005):
    gen = np.random.default_rng(seed)
    base = synthetic.write_rounds(tmp_path / f"base{seed}", synthetic.suite(gen, SUITE, rounds, n, noise,
                                                                            round_noise=round_noise))
    head = synthetic.write_rounds(tmp_path / f"head{seed}", synthetic.suite(gen, SUITE, rounds, n, noise,
                                                                            slowdown=slowdown, round_noise=round_noise))
    return str(base), str(head)


def test_aa_passes_on_repeated_runs(tmp_path, capsys) -> None:
    for seed in range(6):
        assert compare_main(list(_sides(tmp_path, seed))) == 0
    assert "**PASS**: 0 regression(s) in 6 benchmark(s)" in capsys.readouterr().out


def test_planted_20_percent_slowdown_fails_and_names_only_it(tmp_path, capsys) -> None:
    slow = "bench/bench_x.py::test_c"
    base, head = _sides(tmp_path, 100, slowdown={slow: 0.20})
    assert compare_main([base, head, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    failing = [b["name"] for b in doc["benchmarks"] if b["fails"]]
    assert failing == [slow]
    row = doc["benchmarks"][0]  # regressions on top
    assert row["name"] == slow and row["verdict"] == "slower"
    assert 0.15 < row["change"] < 0.25 and row["ci95"][0] < 0.20 < row["ci95"][1]
    assert compare_main([base, head]) == 1
    table = capsys.readouterr().out
    assert table.splitlines()[0].startswith("**FAIL**: 1 regression(s)") and slow in table.splitlines()[0]


def test_planted_3_percent_under_a_5_percent_threshold_passes(tmp_path, capsys) -> None:
    base, head = _sides(tmp_path, 200, slowdown={"bench/bench_x.py::test_d": 0.03}, noise=0.005, round_noise=0.0)
    assert compare_main([base, head, "--threshold", "5%", "--json"]) == 0
    row = next(b for b in json.loads(capsys.readouterr().out)["benchmarks"] if b["name"].endswith("test_d"))
    # Significant (every head round slower than every base round), so it is the threshold that lets it pass ...
    assert row["verdict"] == "same" and row["q_slower"] < 0.001 and 0.02 < row["change"] < 0.04
    # ... and at a 2 % threshold the same runs fail.
    assert compare_main([base, head, "--threshold", "2%"]) == 1


def test_thirty_noise_benchmarks_alarm_only_without_the_suite_correction(tmp_path) -> None:
    """30 benchmarks with no change at all, noisy and few samples, 40 independent suites:
    judged one by one at alpha 0.01, about a quarter of the suites raise an alarm; with
    Benjamini-Hochberg across the suite (the family-wise rate under no change is <= alpha)
    next to none does."""
    names = {f"bench/noise.py::test_{i}": 1e-3 for i in range(30)}
    alarms = {True: 0, False: 0}
    for trial in range(40):
        gen = np.random.default_rng(1000 + trial)
        base = synthetic.write_rounds(tmp_path / f"b{trial}", synthetic.suite(gen, names, 1, 12, noise=0.25))
        head = synthetic.write_rounds(tmp_path / f"h{trial}", synthetic.suite(gen, names, 1, 12, noise=0.25))
        b, h = load_run(base), load_run(head)
        for correction in (True, False):
            c = compare_runs(b, h, Settings(threshold=0.05, alpha=0.01, correction=correction, resamples=20))
            alarms[correction] += bool(c.regressions)
    assert alarms[False] >= 4, alarms      # per-benchmark judgement cries wolf
    assert alarms[True] <= 1, alarms       # the suite correction does not


def test_inconclusive_with_too_few_samples_says_how_many(tmp_path, capsys) -> None:
    base, head = _sides(tmp_path, 300, slowdown={"bench/bench_x.py::test_a": 0.5}, rounds=1, n=3)
    assert compare_main([base, head, "--json"]) == 0
    row = next(b for b in json.loads(capsys.readouterr().out)["benchmarks"] if b["name"].endswith("test_a"))
    assert row["verdict"] == "inconclusive" and "needs 5 samples per side" in row["note"]


def test_too_noisy_to_gate(tmp_path, capsys) -> None:
    """Rounds that wander by ~12 % (a noise floor above the threshold): changes within
    the floor are not gated, even at +20 %; one far past it is."""
    base, head = _sides(tmp_path, 400, slowdown={"bench/bench_x.py::test_b": 0.2}, round_noise=0.12)
    compare_main([base, head, "--json"])
    rows = {b["name"]: b for b in json.loads(capsys.readouterr().out)["benchmarks"]}
    noisy = [r for r in rows.values() if r["verdict"] == "too noisy"]
    assert noisy and all(r["noise_floor"] > 0.05 and "not gated" in r["note"] for r in noisy)
    # A change far past the floor is still judged, and fails.
    base, head = _sides(tmp_path, 401, slowdown={"bench/bench_x.py::test_b": 0.8}, round_noise=0.12)
    assert compare_main([base, head, "--json"]) == 1
    [row] = [b for b in json.loads(capsys.readouterr().out)["benchmarks"] if b["fails"]]
    assert row["name"].endswith("test_b") and "past its noise floor" in row["note"]
    floors = tmp_path / "floors.json"  # a calibration file says the floor is low: gated again
    floors.write_text(json.dumps({"noise_floors": {name: 0.01 for name in rows}}))
    compare_main([base, head, "--json", "--noise-floors", str(floors)])
    rows = {b["name"]: b for b in json.loads(capsys.readouterr().out)["benchmarks"]}
    assert not any(r["verdict"] == "too noisy" for r in rows.values())


def test_rounds_that_wander_do_not_cry_wolf(tmp_path) -> None:
    """Whole rounds moving by ~10 % (a neighbour's load): an A/A gate that tests the
    pooled samples, blind to rounds, raises alarms; the gate, testing round medians,
    does not (and calls most of them too noisy at a 5 % threshold)."""
    names = {"bench/x.py::test_a": 1e-3, "bench/x.py::test_b": 4e-3}
    alarms = {"rounds": 0, "pooled": 0}
    for trial in range(20):
        gen = np.random.default_rng(5000 + trial)
        sides = [synthetic.suite(gen, names, 5, 200, noise=0.03, round_noise=0.10) for _ in range(2)]
        runs = [load_run(synthetic.write_rounds(tmp_path / f"t{trial}s{i}", docs)) for i, docs in enumerate(sides)]
        settings = Settings(resamples=20)
        alarms["rounds"] += bool(compare_runs(runs[0], runs[1], settings).regressions)
        for run in runs:  # the same samples as one round per side
            for s in run.benchmarks.values():
                s.rounds = [tuple(s.samples)]
        alarms["pooled"] += bool(compare_runs(runs[0], runs[1], settings).regressions)
    assert alarms["rounds"] == 0 and alarms["pooled"] >= 4, alarms
