"""A simulated model for scheduler tests: deterministic, no torch.

The "KV" of position p is a chained hash of tokens 0..p (like real KV, it depends
on the whole prefix). The next token is a hash of every KV entry the step reads,
mod a small vocabulary. So a sequence's output is a function of its token ids
alone when its cache is right, and changes when any slot it reads holds the KV
of other tokens -- a lost, duplicated or misplaced token shows up in the output.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

VOCAB = 40
_MASK = (1 << 61) - 1


def kv_of(prev: int, token: int) -> int:
    """KV content of a position, given the previous position's (0 for the first)."""
    return hash((prev, token)) & _MASK


def kv_chain(tokens: Iterable[int], prev: int = 0) -> list[int]:
    out = []
    for t in tokens:
        prev = kv_of(prev, t)
        out.append(prev)
    return out


def next_token(kv: Sequence[int], index: int = 0) -> int:
    """The token sampled after reading this KV (positions 0..len-1, in order).
    index: which of a parallel-sampling request's n first samples (0 = the
    parent's, and every later token); the others differ, as real samples would."""
    return hash(tuple(kv) if index == 0 else (tuple(kv), index)) % VOCAB


def reference_generate(prompt: list[int], max_tokens: int, max_model_len: int,
                       stop_ids: frozenset[int] = frozenset(),
                       index: int = 0) -> tuple[list[int], str]:
    """The oracle: what sequence `index` of a request must output under any
    schedule, and why it ends ("stop" or "length"), with the scheduler's
    finishing rules."""
    tokens = list(prompt)
    kv = kv_chain(tokens)
    out: list[int] = []
    while True:
        t = next_token(kv, index if not out else 0)
        out.append(t)
        tokens.append(t)
        kv.append(kv_of(kv[-1], t))
        if t in stop_ids:
            return out, "stop"
        if len(out) >= max_tokens or len(tokens) > max_model_len:
            return out, "length"
