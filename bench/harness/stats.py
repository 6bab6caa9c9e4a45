"""The statistics of a comparison, with no knowledge of benchmarks or files.

Times are seconds; a change is head / base - 1 of the medians (+0.10 = 10 % slower).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.stats import mannwhitneyu

Rounds = Sequence[Sequence[float]]


def median(xs: Sequence[float]) -> float:
    if len(xs) == 0:
        raise ValueError("median: xs is empty")
    return float(np.median(np.asarray(xs, dtype=float)))


def change(base: Sequence[float], head: Sequence[float]) -> float:
    """Relative change of the median: head / base - 1."""
    b = median(base)
    if not b > 0:
        raise ValueError(f"change: base median must be positive, got {b}")
    return median(head) / b - 1


def p_greater(head: Sequence[float], base: Sequence[float]) -> float:
    """One-sided Mann-Whitney U p-value for 'head samples are larger than base samples'."""
    if len(head) == 0 or len(base) == 0:
        raise ValueError(f"p_greater: need samples on both sides, got {len(base)} base and {len(head)} head")
    return float(mannwhitneyu(head, base, alternative="greater").pvalue)


def p_greater_many(pairs: Sequence[tuple[Sequence[float], Sequence[float]]]) -> list[float]:
    """p_greater for many (head, base) pairs, one scipy call per group of equal sizes
    (a suite's benchmarks mostly share their sample counts)."""
    out = [0.0] * len(pairs)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (head, base) in enumerate(pairs):
        if len(head) == 0 or len(base) == 0:
            raise ValueError(f"p_greater_many: pair {i} has {len(head)} head and {len(base)} base samples")
        groups.setdefault((len(head), len(base)), []).append(i)
    for idx in groups.values():
        heads = np.array([pairs[i][0] for i in idx], dtype=float)
        bases = np.array([pairs[i][1] for i in idx], dtype=float)
        ps = np.atleast_1d(mannwhitneyu(heads, bases, alternative="greater", axis=1).pvalue)
        for i, pv in zip(idx, ps):
            out[i] = float(pv)
    return out


def smallest_p(n: int, m: int) -> float:
    """The smallest one-sided U p-value that n against m samples can give (exact, no ties)."""
    if n + m <= 1000:
        return 1.0 / math.comb(n + m, n)
    return math.exp(-(math.lgamma(n + m + 1) - math.lgamma(n + 1) - math.lgamma(m + 1)))  # no huge integer


def samples_needed(alpha: float, other: int | None = None) -> int:
    """Fewest samples per side (or against `other` samples) for which p < alpha is possible."""
    if not 0 < alpha < 1:
        raise ValueError(f"samples_needed: alpha must be in (0, 1), got {alpha}")
    n = 1
    while smallest_p(n, other if other is not None else n) >= alpha:
        n += 1
    return n


def benjamini_hochberg(pvalues: Sequence[float]) -> list[float]:
    """BH-adjusted p-values (q-values) in the input order: reject q < alpha controls the
    false discovery rate at alpha across the family."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 1.0
    for rank in range(m, 0, -1):  # step-up: from the largest p down
        i = order[rank - 1]
        running = min(running, pvalues[i] * m / rank)
        adjusted[i] = running
    return adjusted


def bootstrap_change_ci(base: Rounds, head: Rounds, seed: int, resamples: int = 1000,
                        level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the median change. With two or more rounds on
    each side it resamples rounds first, then samples within each drawn round, so a
    shift between rounds (clocks, a neighbour's load) widens the interval as it should;
    with one round per side it resamples the samples."""
    if not 0 < level < 1:
        raise ValueError(f"bootstrap_change_ci: level must be in (0, 1), got {level}")
    if resamples < 10:
        raise ValueError(f"bootstrap_change_ci: resamples must be >= 10, got {resamples}")
    rng = np.random.default_rng(seed)
    b_rounds = [np.asarray(r, dtype=float) for r in base if len(r)]
    h_rounds = [np.asarray(r, dtype=float) for r in head if len(r)]
    if not b_rounds or not h_rounds:
        raise ValueError("bootstrap_change_ci: need samples on both sides")
    b_med, h_med = _resampled_medians(b_rounds, rng, resamples), _resampled_medians(h_rounds, rng, resamples)
    ratios = h_med / b_med - 1
    tail = (1 - level) / 2
    lo, hi = np.quantile(ratios, [tail, 1 - tail])
    return float(lo), float(hi)


def _resampled_medians(rounds: list[np.ndarray], rng: np.random.Generator, resamples: int) -> np.ndarray:
    if len(rounds) == 1:
        x = rounds[0]
        return np.median(x[rng.integers(0, len(x), size=(resamples, len(x)))], axis=1)
    # Rounds padded into one [k, longest] table; a drawn round contributes as many
    # samples as it has, the rest of its row is NaN and left out of the median.
    k = len(rounds)
    lengths = np.array([len(r) for r in rounds])
    table = np.full((k, lengths.max()), np.nan)
    for i, r in enumerate(rounds):
        table[i, :len(r)] = r
    width = lengths.max()
    out = np.empty(resamples)
    chunk = max(1, 4_000_000 // (k * width))  # bound the memory of one step
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        drawn = rng.integers(0, k, size=(b, k))                              # rounds
        pos = (rng.random((b, k, width)) * lengths[drawn][..., None]).astype(np.int64)  # samples within
        values = table[drawn[..., None], pos]
        values[np.arange(width)[None, None, :] >= lengths[drawn][..., None]] = np.nan
        out[start:start + b] = np.nanmedian(values.reshape(b, -1), axis=1)
    return out


def noise_floor(base: Rounds, head: Rounds, z: float = 1.96) -> float | None:
    """The A/A noise floor of a gate over these rounds: the |change| that two sides of
    this many rounds reach by chance 5 % of the time (z = 1.96), from the spread of the
    round medians within each side (pooled; a real shift between the sides does not
    widen it). None with fewer than two rounds on a side."""
    kb, kh = len(base), len(head)
    if kb < 2 or kh < 2:
        return None
    logs_b = np.log([median(r) for r in base])
    logs_h = np.log([median(r) for r in head])
    ss = float(((logs_b - logs_b.mean()) ** 2).sum() + ((logs_h - logs_h.mean()) ** 2).sum())
    sd = math.sqrt(ss / (kb + kh - 2))
    return math.exp(z * sd * math.sqrt(1 / kb + 1 / kh)) - 1
