"""bench/bench_launch.py's measuring (any machine, the device sync stubbed): every
function of a case takes its turn in every round (so a host that slows down mid-run
moves both sides of a ratio alike), and ratios pair each round's figures."""
from __future__ import annotations

import pytest

import bench.bench_launch as bench_launch


def test_functions_take_turns_in_every_round(monkeypatch) -> None:
    events: list[str] = []
    monkeypatch.setattr(bench_launch.torch.cuda, "synchronize", lambda: events.append("sync"))
    fns = {name: ((lambda n=name: events.append(n)), calls) for name, calls in (("bare", 3), ("call", 2))}
    rounds = bench_launch.interleaved_seconds(fns, rounds=4)
    assert {name: len(r) for name, r in rounds.items()} == {"bare": 4, "call": 4}
    assert all(t >= 0 for r in rounds.values() for t in r)
    warm = ["bare"] * 5 + ["call"] * 5 + ["sync"]
    turn = ["bare"] * 3 + ["sync"] + ["call"] * 2 + ["sync"]
    assert events == warm + turn * 4


def test_figures_pair_by_round() -> None:
    """Each round's figure goes with the same round's. Here the host was quick in one
    round and slow in two: round by round the call took 2x, 1.1x and 3x the bare launch,
    median 2x, where the medians of each side taken apart (11 against 10) would say 1.1x."""
    bare = [1.0, 10.0, 10.0]
    call = [2.0, 11.0, 30.0]
    assert bench_launch.paired_median(call, bare, lambda c, b: c / b) == pytest.approx(2.0)
    # checked - sync: 4, 1 and 20 us over it round by round (median 4); apart, 11 - 10 = 1.
    assert bench_launch.paired_median([5.0, 11.0, 30.0], bare, lambda c, s: c - s) == pytest.approx(4.0)
