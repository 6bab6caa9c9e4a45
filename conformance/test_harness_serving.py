"""Serving metrics (issue 10, section 3) against hand-computed values, seeded arrivals
against their distribution, and the percentile gate on the real scheduler with a
simulated model clock: prefix sharing pays off with the cache on, repeated A/A runs
pass, a slower model step fails on p50/p99 TTFT and TPOT."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.harness.compare import Settings, compare_runs
from bench.harness.serving import (RequestTimes, arrival_times, parse_percentiles, parse_slos, percentile_run,
                                   summarize)
from bench.harness.serving_sim import StepCost, simulate
from bench.harness.workloads import prefix_sharing_workload, random_workload


def test_metrics_by_hand() -> None:
    a = RequestTimes("a", arrival=1.0, token_times=[1.5, 1.6, 1.8, 2.1])   # TTFT .5, E2EL 1.1
    b = RequestTimes("b", arrival=2.0, token_times=[2.2])                    # one token: no TPOT
    assert a.ttft == pytest.approx(0.5) and a.e2el == pytest.approx(1.1)
    assert a.tpot == pytest.approx((1.1 - 0.5) / 3) and b.tpot is None
    assert a.itl == pytest.approx([0.1, 0.2, 0.3])
    s = summarize([a, b], percentiles=(50, 100), slos=parse_slos("ttft:300"))
    assert s["median_ttft"] == pytest.approx(0.35) and s["p100_ttft"] == pytest.approx(0.5)
    assert s["mean_tpot"] == pytest.approx(0.2) and s["median_itl"] == pytest.approx(0.2)
    assert s["duration_s"] == pytest.approx(1.2) and s["request_throughput"] == pytest.approx(2 / 1.2)
    assert s["good_fraction"] == 0.5 and s["goodput"] == pytest.approx(1 / 1.2)   # only b meets TTFT <= 300 ms


def test_slo_parsing() -> None:
    assert parse_slos("ttft:200 tpot:50") == {"ttft": 0.2, "tpot": 0.05}
    with pytest.raises(ValueError, match="expected ttft:MS"):
        parse_slos("latency:3")
    with pytest.raises(ValueError, match="not a number"):
        parse_slos("ttft:fast")


@given(seed=st.integers(0, 2**32 - 1), burstiness=st.sampled_from([0.5, 1.0, 4.0]))
def test_arrivals_have_the_rate_and_burstiness_asked(seed: int, burstiness: float) -> None:
    t = np.asarray(arrival_times(4000, rate=20.0, burstiness=burstiness, seed=seed))
    gaps = np.diff(t)
    assert t[0] == 0 and np.all(gaps >= 0)
    assert gaps.mean() == pytest.approx(1 / 20, rel=0.1)
    # a gamma gap's coefficient of variation is 1/sqrt(shape): 1 for Poisson
    assert gaps.std() / gaps.mean() == pytest.approx(1 / math.sqrt(burstiness), rel=0.15)
    assert arrival_times(5, 20.0, burstiness, seed) == arrival_times(5, 20.0, burstiness, seed)


def test_arrivals_refuse_bad_arguments() -> None:
    assert arrival_times(3, float("inf")) == [0.0, 0.0, 0.0]
    for kw, name in (({"n": -1, "rate": 1.0}, "n"), ({"n": 1, "rate": 0.0}, "rate"),
                     ({"n": 1, "rate": 1.0, "burstiness": 0.0}, "burstiness")):
        with pytest.raises(ValueError, match=name):
            arrival_times(**kw)


def test_prefix_sharing_pays_off_only_with_the_cache() -> None:
    w = prefix_sharing_workload(groups=4, per_group=8, system_len=512, question_len=64, output_len=16,
                                rate=40.0, seed=1)
    assert all(p[:512] == w.prompts[i % 4][:512] for i, p in enumerate(w.prompts))
    cached = summarize(simulate(w, StepCost(), prefix_caching=True)[0])
    uncached = summarize(simulate(w, StepCost(), prefix_caching=False)[0])
    assert cached["median_ttft"] < 0.7 * uncached["median_ttft"]
    # a random workload of the same lengths gains nothing from the cache
    r = random_workload(32, 576, 16, rate=40.0, seed=1)
    assert summarize(simulate(r, StepCost(), prefix_caching=True)[0])["median_ttft"] == pytest.approx(
        summarize(simulate(r, StepCost(), prefix_caching=False)[0])["median_ttft"])


def _runs(cost: StepCost, seeds: range) -> list[dict[str, float]]:
    w = random_workload(24, 256, 12, rate=30.0, burstiness=0.7, seed=5)
    out = []
    for s in seeds:
        reqs, digest = simulate(w, cost, seed=s)
        out.append(summarize(reqs))
        assert digest == simulate(w, cost, seed=s + 1000)[1]   # the same tokens whatever the timing
    return out


KEYS = ["median_ttft", "p99_ttft", "median_tpot", "p99_tpot"]


def test_percentiles_gated_over_repeated_runs() -> None:
    base = percentile_run(_runs(StepCost(jitter=0.03), range(0, 7)), KEYS, "base")
    same = percentile_run(_runs(StepCost(jitter=0.03), range(100, 107)), KEYS, "head")
    slow = percentile_run(_runs(StepCost(base_s=2.5e-3, per_token_s=2.5e-5, jitter=0.03), range(200, 207)),
                          KEYS, "slow")
    assert compare_runs(base, same, Settings(resamples=50)).exit_status == 0
    c = compare_runs(base, slow, Settings(resamples=50))
    failing = {v.name for v in c.regressions}
    assert {"median_ttft", "median_tpot"} <= failing and all(v.unit == "rounds" for v in c.verdicts)


def test_percentile_parsing() -> None:
    assert parse_percentiles("50,90,99") == (50.0, 90.0, 99.0) and parse_percentiles("99.9") == (99.9,)
    with pytest.raises(ValueError, match="must be in"):
        parse_percentiles("0,50")
    with pytest.raises(ValueError, match="'p99': not a number"):
        parse_percentiles("50, p99")
