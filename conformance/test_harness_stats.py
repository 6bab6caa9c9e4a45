"""bench.harness.stats against independent oracles: the BH definition by brute force,
scipy's exact U distribution, bootstrap coverage on draws with a known truth."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import mannwhitneyu

from bench.harness import stats


def _bh_rejections_by_definition(pvalues: list[float], alpha: float) -> set[int]:
    """Benjamini-Hochberg as written: the largest k with p_(k) <= k·alpha/m; reject the k smallest."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    k = max((rank for rank in range(1, m + 1) if pvalues[order[rank - 1]] <= rank * alpha / m), default=0)
    return set(order[:k])


@given(seed=st.integers(0, 2**32 - 1), m=st.integers(1, 40), alpha=st.sampled_from([0.01, 0.05, 0.1]))
def test_bh_adjusted_values_reject_what_the_definition_rejects(seed: int, m: int, alpha: float) -> None:
    gen = np.random.default_rng(seed)
    # a mix of null p-values and a few tiny ones, with ties
    p = [float(x) for x in np.round(np.where(gen.random(m) < 0.3, gen.random(m) * 1e-3, gen.random(m)), 4)]
    q = stats.benjamini_hochberg(p)
    assert {i for i, v in enumerate(q) if v <= alpha} == _bh_rejections_by_definition(p, alpha)
    assert all(qi >= pi - 1e-15 and qi <= 1 for pi, qi in zip(p, q))


def test_bh_is_the_identity_for_one_test_and_scales_the_smallest() -> None:
    assert stats.benjamini_hochberg([0.03]) == [0.03]
    assert stats.benjamini_hochberg([0.001, 0.5, 0.9]) == pytest.approx([0.003, 0.75, 0.9])


@pytest.mark.parametrize("n, m", [(3, 3), (4, 4), (5, 5), (3, 6)])
def test_smallest_p_is_scipy_exact_for_full_separation(n: int, m: int) -> None:
    base = [float(i) for i in range(m)]
    head = [100.0 + i for i in range(n)]
    exact = mannwhitneyu(head, base, alternative="greater", method="exact").pvalue
    assert stats.smallest_p(n, m) == pytest.approx(exact)
    assert stats.smallest_p(n, m) == pytest.approx(1 / math.comb(n + m, n))


def test_samples_needed() -> None:
    assert stats.samples_needed(0.01) == 5      # 1/C(8,4) = 0.014, 1/C(10,5) = 0.004
    assert stats.samples_needed(0.05) == 4      # 1/C(6,3) = 0.05 is not below 0.05
    assert stats.samples_needed(0.01, other=20) == 2
    with pytest.raises(ValueError, match="alpha"):
        stats.samples_needed(0)


def test_p_greater_direction() -> None:
    base, head = [1.0, 1.1, 0.9, 1.05, 0.95, 1.0], [1.3, 1.4, 1.2, 1.35, 1.25, 1.3]
    assert stats.p_greater(head, base) < 0.01 < stats.p_greater(base, head)
    with pytest.raises(ValueError, match="both sides"):
        stats.p_greater([], base)


def test_change_and_median_refuse_bad_input() -> None:
    assert stats.change([1.0, 2.0, 3.0], [2.2, 2.2, 2.2]) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="positive"):
        stats.change([0.0], [1.0])
    with pytest.raises(ValueError, match="empty"):
        stats.median([])


def test_bootstrap_interval_covers_the_true_change_about_95_percent() -> None:
    gen = np.random.default_rng(11)
    true = 0.10
    hits = 0
    trials = 120
    for t in range(trials):
        base = np.exp(gen.normal(0, 0.05, 60))
        head = (1 + true) * np.exp(gen.normal(0, 0.05, 60))
        lo, hi = stats.bootstrap_change_ci([base], [head], seed=t, resamples=400)
        hits += lo <= true <= hi
    assert 0.85 <= hits / trials <= 0.995, hits


def test_bootstrap_is_seeded_and_widens_with_shifts_between_rounds() -> None:
    gen = np.random.default_rng(3)
    base = [list(np.exp(gen.normal(s, 0.01, 40))) for s in (0.0, 0.04, -0.04, 0.02, -0.02)]
    head = [list(np.exp(gen.normal(s, 0.01, 40))) for s in (0.03, -0.03, 0.0, 0.04, -0.01)]
    a = stats.bootstrap_change_ci(base, head, seed=5, resamples=300)
    assert a == stats.bootstrap_change_ci(base, head, seed=5, resamples=300)
    flat = stats.bootstrap_change_ci([sum(base, [])], [sum(head, [])], seed=5, resamples=300)
    assert (a[1] - a[0]) > 1.5 * (flat[1] - flat[0])  # rounds resampled: the shifts count
    with pytest.raises(ValueError, match="level"):
        stats.bootstrap_change_ci(base, head, seed=0, level=1.0)


def test_noise_floor_estimates_the_95th_percentile_of_aa_changes() -> None:
    """Rounds whose medians move by a log-normal sigma of 5 %: the estimate from one
    gate's rounds is, on average, the 95th percentile of |change| over many A/A gates."""
    gen = np.random.default_rng(21)
    k, sigma = 5, 0.05

    def side() -> list[list[float]]:
        return [list(np.exp(gen.normal(s, 0.002, 30))) for s in gen.normal(0, sigma, k)]
    estimates, changes = [], []
    for _ in range(400):
        base, head = side(), side()
        estimates.append(stats.noise_floor(base, head))
        changes.append(abs(stats.change(sum(base, []), sum(head, []))))
    truth = float(np.quantile(changes, 0.95))
    assert 0.8 * truth < float(np.median(estimates)) < 1.25 * truth, (np.median(estimates), truth)
    base, head = side(), side()
    slower = [[x * 1.3 for x in r] for r in head]   # a real shift does not raise the floor
    assert stats.noise_floor(base, slower) == pytest.approx(stats.noise_floor(base, head))
    assert stats.noise_floor([[1.0]], head) is None


def test_p_greater_many_matches_one_by_one() -> None:
    gen = np.random.default_rng(8)
    pairs = [(list(gen.normal(0.1 * i, 1, n)), list(gen.normal(0, 1, m)))
             for i, (n, m) in enumerate([(12, 12), (12, 12), (7, 9), (12, 12), (30, 5)])]
    assert stats.p_greater_many(pairs) == pytest.approx([stats.p_greater(h, b) for h, b in pairs])


def test_smallest_p_of_thousands_of_samples_is_tiny_not_an_overflow() -> None:
    assert stats.smallest_p(2000, 2000) == 0.0
    assert stats.smallest_p(30, 30) == pytest.approx(1 / math.comb(60, 30))
