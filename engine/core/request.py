"""A request: one prompt, its sequences, its sampling limits, and how it ended. No torch.

A request with n > 1 (parallel sampling) starts as one sequence, the parent
(`seq`, always seqs[0]); when its prompt samples, the scheduler forks n - 1
children (Sequence.fork + BlockManager.fork) and the request becomes a group
(`is_group`): seqs[i] holds the i-th sample. It finishes when all have.
"""
from __future__ import annotations

import bisect
from collections.abc import Iterable, MutableSequence

from engine.core.sequence import Sequence, SequenceStatus


class Request:
    """request_id: caller's name for it (unique among live requests).
    arrival: a monotonically increasing number given by the scheduler; lower
        arrived earlier (FCFS order and the preemption victim choice use it).
    max_tokens: most output tokens. eos_token_ids / stop_token_ids: sampling one
        of these finishes the request ("stop"); EOS is skipped when ignore_eos.
    max_outputs: the output count that finishes it by length: max_tokens, or
        fewer when max_model_len (if given) ends it first -- a sequence may hold
        max_model_len + 1 tokens, the last one sampled but never computed.
    n: sequences to sample (parallel sampling); each gets max_tokens.
    error: why the request was ignored (FINISHED_IGNORED), else None.
    """

    __slots__ = ("request_id", "seqs", "seq", "n", "is_group", "arrival", "max_tokens",
                 "max_outputs", "eos_token_ids", "stop_token_ids", "ignore_eos", "stop_ids",
                 "error")

    def __init__(self, request_id: str, seq: Sequence, arrival: int, max_tokens: int,
                 eos_token_ids: Iterable[int] = (), stop_token_ids: Iterable[int] = (),
                 ignore_eos: bool = False, max_model_len: int | None = None,
                 n: int = 1) -> None:
        for name, value in (("max_tokens", max_tokens), ("n", n)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"request {request_id!r}: {name} must be a positive int, "
                                 f"got {value!r}")
        self.request_id = request_id
        self.seq = seq
        self.seqs = [seq]
        self.n = n
        self.is_group = False           # True once the children are forked
        self.arrival = arrival
        self.max_tokens = max_tokens
        self.max_outputs = max_tokens if max_model_len is None else max(
            1, min(max_tokens, max_model_len + 1 - seq.prompt_len))
        self.eos_token_ids = frozenset(eos_token_ids)
        self.stop_token_ids = frozenset(stop_token_ids)
        self.ignore_eos = ignore_eos
        # The one set the hot path tests each sampled token against.
        self.stop_ids = self.stop_token_ids if ignore_eos else (
            self.eos_token_ids | self.stop_token_ids)
        self.error: str | None = None

    @property
    def status(self) -> SequenceStatus:
        """The status of its unfinished sequences (they share one), else the parent's."""
        for seq in self.seqs:
            if not seq.status.is_finished:
                return seq.status
        return self.seq.status

    @property
    def is_finished(self) -> bool:
        return all(seq.status.is_finished for seq in self.seqs)

    @property
    def finish_reason(self) -> str | None:
        """The parent's "stop", "length", "abort" or "ignored" once the request has
        finished, else None. Each sequence has its own: seq.finish_reason."""
        return self.seq.finish_reason if self.is_finished else None

    def live_seqs(self) -> list[Sequence]:
        """Its unfinished sequences, in sample order."""
        return [seq for seq in self.seqs if not seq.status.is_finished]

    @property
    def width(self) -> int:
        """Sequences it runs or will run: n less those finished (max_num_seqs counts these)."""
        return self.n - sum(1 for seq in self.seqs if seq.status.is_finished)

    @property
    def output_token_ids(self) -> list[int]:
        return self.seq.output_token_ids

    def __repr__(self) -> str:
        return f"Request({self.request_id!r}, arrival={self.arrival}, {self.seq!r})"


def _arrival(req: Request) -> int:
    return req.arrival


def insert_by_arrival(queue: MutableSequence[Request], req: Request) -> None:
    """Insert into a queue kept sorted by arrival (a list or a deque)."""
    bisect.insort(queue, req, key=_arrival)
