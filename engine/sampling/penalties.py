"""Logit processors that depend on a row's token history: min_tokens blocking and
the repetition / frequency / presence penalties, batched over rows (vLLM's rules).

Each function edits the float32 logits `x` [N, V] in place; the caller owns x.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def block_tokens(x: torch.Tensor, blocked: Sequence[Sequence[int]]) -> None:
    """Set x[i, t] = -inf for every t in blocked[i] (ids >= V are skipped: they can
    never be sampled). Used for the stop/EOS ids while min_tokens is not reached."""
    vocab = x.shape[1]
    rows: list[int] = []
    cols: list[int] = []
    for i, ids in enumerate(blocked):
        for t in ids:
            if t < vocab:
                rows.append(i)
                cols.append(t)
    if rows:
        idx = (torch.tensor(rows, device=x.device), torch.tensor(cols, device=x.device))
        x.index_put_(idx, torch.tensor(float("-inf"), device=x.device))


def token_counts(histories: Sequence[Sequence[int]], vocab: int,
                 device: torch.device) -> torch.Tensor:
    """[N, V] float32: how often each token id occurs in each row's history.
    Ids must lie in [0, vocab); padding uses the extra column `vocab`."""
    longest = max((len(h) for h in histories), default=0)
    counts = torch.zeros(len(histories), vocab + 1, dtype=torch.float32, device=device)
    if longest:
        padded = [list(h) + [vocab] * (longest - len(h)) for h in histories]
        index = torch.tensor(padded, dtype=torch.int64, device=device)
        if bool(((index < 0) | (index > vocab)).any()):
            raise ValueError(f"token histories hold ids outside [0, {vocab})")
        counts.scatter_add_(1, index, torch.ones_like(index, dtype=torch.float32))
    return counts[:, :vocab]


def apply_penalties(x: torch.Tensor, prompt_ids: Sequence[Sequence[int]],
                    output_ids: Sequence[Sequence[int]], repetition: Sequence[float],
                    frequency: Sequence[float], presence: Sequence[float]) -> None:
    """repetition (over prompt and output tokens): a positive logit is divided by
    it, a negative one multiplied; frequency: minus frequency * count in the
    output; presence: minus presence where the token occurs in the output. Rows
    with 1 / 0 / 0 come out bit for bit unchanged."""
    vocab, dev = x.shape[1], x.device
    out_counts = token_counts(output_ids, vocab, dev)
    if any(r != 1.0 for r in repetition):
        seen = (token_counts(prompt_ids, vocab, dev) > 0) | (out_counts > 0)
        rep = torch.tensor(repetition, dtype=torch.float32, device=dev)[:, None]
        penalised = torch.where(x > 0, x / rep, x * rep)
        x.copy_(torch.where(seen, penalised, x))
    if any(f != 0.0 for f in frequency):
        x.sub_(torch.tensor(frequency, dtype=torch.float32, device=dev)[:, None] * out_counts)
    if any(p != 0.0 for p in presence):
        present = (out_counts > 0).to(torch.float32)
        x.sub_(torch.tensor(presence, dtype=torch.float32, device=dev)[:, None] * present)
