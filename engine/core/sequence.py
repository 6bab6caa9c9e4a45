"""A sequence: the token ids of one generation stream (prompt + output). No torch."""
from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    SWAPPED = "swapped"
    FINISHED_STOPPED = "finished_stopped"      # EOS or a stop token
    FINISHED_LENGTH = "finished_length"        # max_tokens reached
    FINISHED_ABORTED = "finished_aborted"      # abort(request_id)
    FINISHED_IGNORED = "finished_ignored"      # can never fit: reported, never run

    @property
    def is_finished(self) -> bool:
        return self.value.startswith("finished")


FINISH_REASONS: Mapping[SequenceStatus, str] = MappingProxyType({
    SequenceStatus.FINISHED_STOPPED: "stop",
    SequenceStatus.FINISHED_LENGTH: "length",
    SequenceStatus.FINISHED_ABORTED: "abort",
    SequenceStatus.FINISHED_IGNORED: "ignored",
})


class Sequence:
    """Token ids of one stream. The block manager reads `token_ids`; the scheduler
    moves `status` and `num_computed_tokens` (how many tokens have KV in the cache).

    token_ids and output_token_ids are plain lists for the hot paths that read
    them every step: read them, but append only through append_token_id.
    """

    __slots__ = ("seq_id", "prompt_token_ids", "output_token_ids", "token_ids", "status",
                 "num_computed_tokens")

    def __init__(self, seq_id: int, prompt_token_ids: list[int]) -> None:
        if not prompt_token_ids:
            raise ValueError(f"sequence {seq_id}: prompt_token_ids is empty")
        self.seq_id = seq_id
        self.prompt_token_ids: list[int] = list(prompt_token_ids)
        self.output_token_ids: list[int] = []
        self.token_ids: list[int] = list(prompt_token_ids)
        self.status = SequenceStatus.WAITING
        self.num_computed_tokens = 0

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def finish_reason(self) -> str | None:
        """"stop", "length", "abort", "ignored", or None while unfinished."""
        return FINISH_REASONS.get(self.status)

    def append_token_id(self, token_id: int) -> None:
        self.token_ids.append(token_id)
        self.output_token_ids.append(token_id)

    def fork(self, new_seq_id: int) -> "Sequence":
        """A child with the same tokens, status and progress (parallel sampling);
        its blocks are shared through BlockManager.fork."""
        child = Sequence(new_seq_id, self.prompt_token_ids)
        child.output_token_ids = list(self.output_token_ids)
        child.token_ids = list(self.token_ids)
        child.status = self.status
        child.num_computed_tokens = self.num_computed_tokens
        return child

    def __repr__(self) -> str:
        return (f"Sequence(id={self.seq_id}, len={len(self)}, "
                f"computed={self.num_computed_tokens}, {self.status.value})")
