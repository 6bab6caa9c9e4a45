"""A sequence: the token ids of one generation stream (prompt + output). No torch."""
from __future__ import annotations

import enum


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


class Sequence:
    """Token ids of one stream. The block manager reads `token_ids`; the scheduler
    moves `status` and `num_computed_tokens` (how many tokens have KV in the cache)."""

    def __init__(self, seq_id: int, prompt_token_ids: list[int]) -> None:
        if not prompt_token_ids:
            raise ValueError(f"sequence {seq_id}: prompt_token_ids is empty")
        self.seq_id = seq_id
        self.prompt_token_ids: list[int] = list(prompt_token_ids)
        self.output_token_ids: list[int] = []
        self._token_ids: list[int] = list(prompt_token_ids)
        self.status = SequenceStatus.WAITING
        self.num_computed_tokens = 0

    @property
    def token_ids(self) -> list[int]:
        return self._token_ids

    def __len__(self) -> int:
        return len(self._token_ids)

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_token_ids)

    def append_token_id(self, token_id: int) -> None:
        self._token_ids.append(token_id)
        self.output_token_ids.append(token_id)

    def fork(self, new_seq_id: int) -> "Sequence":
        """A child with the same tokens (for beam/parallel sampling); blocks are
        shared through BlockManager.fork."""
        child = Sequence(new_seq_id, self.prompt_token_ids)
        for t in self.output_token_ids:
            child.append_token_id(t)
        child.status = self.status
        child.num_computed_tokens = self.num_computed_tokens
        return child

    def __repr__(self) -> str:
        return (f"Sequence(id={self.seq_id}, len={len(self)}, "
                f"computed={self.num_computed_tokens}, {self.status.value})")
