"""A plain numpy oracle of the sampler's logit processing (engine/sampling).

Imports nothing from engine: each rule is written out token by token, from the
rule's statement, not from the engine's batched code.

- Elementwise steps (blocking, penalties, temperature) run in float32, one IEEE
  operation at a time in the order the rule states, as the engine's float32
  logits do; each such operation is correctly rounded, so the values must agree
  bit for bit.
- The truncation decisions (top-k, top-p, min-p) are decided on these values,
  with probabilities in float64. `margin` reports how close a decision came to
  its boundary (and how close two distinct values came to a tie), so a test can
  skip draws where float32 rounding in the engine could honestly decide the
  other way.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass
class RowParams:
    """The fields of one sampling row that the processing reads."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    blocked: Sequence[int] = ()
    prompt: Sequence[int] = ()
    output: Sequence[int] = ()


@dataclasses.dataclass
class Processed:
    values: np.ndarray        # float32 [V]; -inf where dropped
    kept: np.ndarray          # bool [V]
    margin: float             # smallest distance of a decision from its boundary


def softmax64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    finite = np.isfinite(x)
    out = np.zeros_like(x)
    if finite.any():
        e = np.exp(x[finite] - x[finite].max())
        out[finite] = e / e.sum()
    return out


def log_softmax64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max()
    return x - m - np.log(np.exp(x - m).sum())


def penalised(logits: np.ndarray, p: RowParams) -> np.ndarray:
    """Blocking and the three penalties, float32."""
    x = logits.astype(np.float32).copy()
    for t in p.blocked:
        if t < len(x):
            x[t] = -np.inf
    r = np.float32(p.repetition_penalty)
    if p.repetition_penalty != 1.0:
        for t in set(p.prompt) | set(p.output):
            x[t] = x[t] / r if x[t] > 0 else x[t] * r
    counts = Counter(p.output)
    for t, c in counts.items():
        if p.frequency_penalty != 0.0:
            x[t] = x[t] - np.float32(p.frequency_penalty) * np.float32(c)
        if p.presence_penalty != 0.0:
            x[t] = x[t] - np.float32(p.presence_penalty)
    return x


def near_tie(x: np.ndarray) -> float:
    """Smallest relative gap between two distinct finite values."""
    v = np.unique(x[np.isfinite(x)].astype(np.float64))
    if len(v) < 2:
        return np.inf
    gaps = np.diff(v) / np.maximum(1.0, np.abs(v[1:]))
    return float(gaps.min())


def kept_top_k(x: np.ndarray, k: int) -> np.ndarray:
    """Tokens at least as large as the k-th largest value (ties all kept)."""
    if k <= 0 or k >= len(x):
        return np.ones(len(x), dtype=bool)
    kth = sorted(x.tolist(), reverse=True)[k - 1]
    return np.array([v >= kth for v in x.tolist()])


def kept_top_p(x: np.ndarray, top_p: float) -> tuple[np.ndarray, float]:
    """Token i stays iff the mass of strictly more probable tokens is < top_p."""
    if top_p >= 1.0:
        return np.ones(len(x), dtype=bool), np.inf
    q = softmax64(x)
    keep, margin = np.zeros(len(x), dtype=bool), np.inf
    for i in range(len(x)):
        above = sum(q[j] for j in range(len(x)) if x[j] > x[i])
        keep[i] = above < top_p
        if q[i] > 0:
            margin = min(margin, abs(above - top_p))
    return keep, margin


def kept_min_p(x: np.ndarray, min_p: float) -> tuple[np.ndarray, float]:
    """Token i stays iff its probability is >= min_p times the largest."""
    if min_p <= 0.0:
        return np.ones(len(x), dtype=bool), np.inf
    q = softmax64(x)
    ratio = q / q.max()
    finite = q > 0
    margin = float(np.abs(ratio[finite] - min_p).min()) if finite.any() else np.inf
    return ratio >= min_p, margin


def process(logits: np.ndarray, p: RowParams) -> Processed:
    """The row's logits after every step, and its kept set. Greedy rows
    (temperature 0) are only blocked and penalised; their kept set is the
    single lowest-id maximum."""
    x = penalised(logits, p)
    if p.temperature == 0.0:
        best = int(np.argmax(x))
        kept = np.zeros(len(x), dtype=bool)
        kept[best] = True
        return Processed(x, kept, np.inf)
    if p.temperature != 1.0:
        x = x / np.float32(p.temperature)
    margin = near_tie(x) if (p.top_p < 1.0 or p.min_p > 0.0) else np.inf
    x = np.where(kept_top_k(x, p.top_k), x, np.float32(-np.inf)).astype(np.float32)
    keep, m_p = kept_top_p(x, p.top_p)
    x = np.where(keep, x, np.float32(-np.inf)).astype(np.float32)
    keep, m_min = kept_min_p(x, p.min_p)
    x = np.where(keep, x, np.float32(-np.inf)).astype(np.float32)
    return Processed(x, np.isfinite(x), min(margin, m_p, m_min))


def ranks(logprobs: np.ndarray) -> np.ndarray:
    """1 + the number of tokens with a strictly greater logprob."""
    return np.array([1 + int((logprobs > v).sum()) for v in logprobs])


def top_order(logprobs: np.ndarray) -> list[int]:
    """Token ids by logprob, ties by lower id first."""
    return sorted(range(len(logprobs)), key=lambda t: (-logprobs[t], t))
