"""A request: one prompt, its sampling limits, and how it ended. No torch.

One Sequence per request today; `seqs` is a list so parallel sampling (n > 1,
children made with Sequence.fork + BlockManager.fork) can be added later.
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
    error: why the request was ignored (FINISHED_IGNORED), else None.
    """

    __slots__ = ("request_id", "seqs", "seq", "arrival", "max_tokens", "max_outputs",
                 "eos_token_ids", "stop_token_ids", "ignore_eos", "stop_ids", "error")

    def __init__(self, request_id: str, seq: Sequence, arrival: int, max_tokens: int,
                 eos_token_ids: Iterable[int] = (), stop_token_ids: Iterable[int] = (),
                 ignore_eos: bool = False, max_model_len: int | None = None) -> None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"request {request_id!r}: max_tokens must be a positive int, "
                             f"got {max_tokens!r}")
        self.request_id = request_id
        self.seq = seq
        self.seqs = [seq]
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
        return self.seq.status

    @property
    def is_finished(self) -> bool:
        return self.seq.status.is_finished

    @property
    def finish_reason(self) -> str | None:
        """"stop", "length", "abort", "ignored", or None while unfinished."""
        return self.seq.finish_reason

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
