"""How a request's sequences share one step's token budget. No torch.

A request is scheduled whole: each of its live sequences (one, or a parallel-
sampling group's) gets at least one token, or none of them runs this step.
"""
from __future__ import annotations

from engine.core.config import SchedulerConfig
from engine.core.sequence import Sequence


def split_budget(remaining: list[int], budget: int, started: bool,
                 cfg: SchedulerConfig) -> list[int] | None:
    """Tokens each sequence computes this step, given the tokens each has left
    (all >= 1); None: the request waits. All of them when the budget allows;
    else the budget, one token each first and the rest in order -- for a request
    already running (its prefill goes on), or, when starting (admission or swap
    in), only with chunked prefill on or when it could never fit one step."""
    k = len(remaining)
    if budget < k:
        return None
    total = sum(remaining)
    if (total > budget and not started and not cfg.enable_chunked_prefill
            and total <= cfg.max_num_batched_tokens):
        return None
    if total <= budget:
        return list(remaining)
    extra = budget - k
    tokens = []
    for r in remaining:
        n = min(r, 1 + extra)
        extra -= n - 1
        tokens.append(n)
    return tokens


def prefix_view(seq: Sequence, num_tokens: int) -> Sequence:
    """What the block manager should see of a sequence whose first num_tokens
    have KV by the end of the step: the sequence itself, or a copy of its prefix."""
    if num_tokens == len(seq.token_ids):
        return seq
    return Sequence(seq.seq_id, seq.token_ids[:num_tokens])
