"""Logprobs of chosen tokens and the top alternatives, batched over rows.

Values are the log_softmax of the logits given (the sampler passes the raw model
logits, before penalties, temperature and truncation: vLLM V1's default
"raw_logprobs"). Rank = 1 + the number of tokens with a strictly greater
logprob, for the chosen token and for the top ones alike, so tied tokens share a
rank. The top list is ordered by logprob, ties by lower token id first.
The same function serves prompt logprobs (logits of positions 0..P-2 against
prompt tokens 1..P-1).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch


@dataclasses.dataclass(frozen=True)
class TokenLogprobs:
    """token_id: the chosen (sampled or prompt) token; logprob and rank of it;
    top: (token id, logprob, rank) of the `k` most likely tokens."""

    token_id: int
    logprob: float
    rank: int
    top: tuple[tuple[int, float, int], ...]

    def as_dict(self) -> dict[int, tuple[float, int]]:
        """token id -> (logprob, rank): the chosen token first, then the top ones
        (vLLM's shape for one position; the chosen token is always present)."""
        out = {self.token_id: (self.logprob, self.rank)}
        for tid, lp, rank in self.top:
            out.setdefault(tid, (lp, rank))
        return out


def compute_logprobs(logits: torch.Tensor, token_ids: Sequence[int],
                     num_top: Sequence[int]) -> list[TokenLogprobs]:
    """logits [M, V] (any float dtype; computed in float32), token_ids[i] the
    chosen token of row i, num_top[i] >= 0 how many top entries row i returns."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be 2-D [rows, vocab], got shape {tuple(logits.shape)}")
    rows, vocab = logits.shape
    if len(token_ids) != rows or len(num_top) != rows:
        raise ValueError(f"token_ids ({len(token_ids)}) and num_top ({len(num_top)}) "
                         f"must have one entry per logits row ({rows})")
    if any(not 0 <= t < vocab for t in token_ids):
        raise ValueError(f"token_ids must lie in [0, {vocab}), got {list(token_ids)!r}")
    if any(k < 0 for k in num_top):
        raise ValueError(f"num_top must be >= 0, got {list(num_top)!r}")
    if rows == 0:
        return []
    lp = logits.to(torch.float32).log_softmax(dim=-1)
    chosen = torch.tensor(list(token_ids), dtype=torch.int64, device=lp.device)[:, None]
    chosen_lp = lp.gather(1, chosen)
    chosen_rank = (lp > chosen_lp).sum(dim=-1) + 1
    k = min(max(num_top), vocab)
    top_ids = top_lp = top_rank = None
    if k > 0:
        # A stable descending sort puts equal logprobs in id order.
        ordered, order = lp.sort(dim=-1, descending=True, stable=True)
        top_lp, top_ids = ordered[:, :k], order[:, :k]
        # Rank of sorted position j: 1 + the first position holding the same value.
        pos = torch.arange(k, device=lp.device).expand(rows, k)
        starts = torch.ones_like(top_lp, dtype=torch.bool)
        starts[:, 1:] = top_lp[:, 1:] != top_lp[:, :-1]
        top_rank = torch.where(starts, pos, torch.zeros_like(pos)).cummax(dim=-1).values + 1
        top_ids, top_lp, top_rank = top_ids.tolist(), top_lp.tolist(), top_rank.tolist()
    chosen_lp, chosen_rank = chosen_lp[:, 0].tolist(), chosen_rank.tolist()
    out = []
    for i in range(rows):
        n = min(num_top[i], vocab)
        top = () if n == 0 else tuple(zip(top_ids[i][:n], top_lp[i][:n], top_rank[i][:n]))
        out.append(TokenLogprobs(token_ids[i], chosen_lp[i], chosen_rank[i], top))
    return out
