"""Truncation of the distribution, batched over rows: top-k, top-p, min-p.

Each function sets the logits of the dropped tokens to -inf in place. The kept
sets are defined so that tied tokens are always kept or dropped together (the
result does not depend on how a sort orders equal values):

- top-k (k >= 1): keep x_i >= the k-th largest logit (counted with multiplicity),
  so every token tied with the k-th one stays; k = 0 or k >= V: off.
- top-p (p < 1): with probabilities q = softmax(x), keep token i iff the mass of
  the tokens strictly more probable than i is below p. This is the smallest set
  of top tokens whose mass reaches p, plus every token tied with its last one;
  the most likely token is always kept. p = 1: off.
- min-p (m > 0): keep q_i >= m * max(q); the most likely token is always kept.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

_NEG_INF = float("-inf")


def apply_top_k(x: torch.Tensor, top_k: Sequence[int]) -> None:
    vocab = x.shape[1]
    ks = [k if 0 < k < vocab else 0 for k in top_k]
    largest = max(ks, default=0)
    if largest == 0:
        return
    values = x.topk(largest, dim=-1).values                 # descending
    k = torch.tensor(ks, dtype=torch.int64, device=x.device)
    kth = values.gather(1, (k - 1).clamp(min=0)[:, None])
    kth = torch.where(k[:, None] > 0, kth, torch.full_like(kth, _NEG_INF))
    x.masked_fill_(x < kth, _NEG_INF)


def apply_top_p(x: torch.Tensor, top_p: Sequence[float]) -> None:
    if all(p >= 1.0 for p in top_p):
        return
    probs = x.softmax(dim=-1)
    ordered = probs.sort(dim=-1, descending=True).values
    # Mass strictly before each sorted position, summed in float64 so the boundary
    # is not moved by float32 rounding over a large vocabulary.
    total = ordered.double().cumsum(dim=-1)
    before = torch.cat([torch.zeros_like(total[:, :1]), total[:, :-1]], dim=-1)
    p = torch.tensor(top_p, dtype=torch.float64, device=x.device)[:, None]
    # Positions 0..count-1 have mass-before < p (it never decreases, and
    # position 0 has 0 < p); the last of them sets the threshold probability.
    count = (before < p).sum(dim=-1, keepdim=True)
    threshold = ordered.gather(1, count - 1)
    threshold = torch.where(p < 1.0, threshold, torch.full_like(threshold, -1.0))
    x.masked_fill_(probs < threshold, _NEG_INF)


def apply_min_p(x: torch.Tensor, min_p: Sequence[float]) -> None:
    if all(m <= 0.0 for m in min_p):
        return
    probs = x.softmax(dim=-1)
    top = probs.max(dim=-1, keepdim=True).values
    m = torch.tensor(min_p, dtype=torch.float32, device=x.device)[:, None]
    x.masked_fill_(probs < m * top, _NEG_INF)
