"""What the engine returns: RequestOutput and CompletionOutput, shaped as vLLM's."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class Logprob:
    """One token's log-probability; rank 1 is the most likely token."""

    logprob: float
    rank: int
    decoded_token: Optional[str] = None


# One dict per position: token id -> Logprob (the chosen token always present).
PositionLogprobs = dict[int, Logprob]


@dataclass
class RequestMetrics:
    """Wall-clock times (time.monotonic seconds) of a request's life."""

    arrival_time: float
    first_scheduled_time: Optional[float] = None
    first_token_time: Optional[float] = None
    last_token_time: Optional[float] = None
    finished_time: Optional[float] = None
    token_times: list[float] = field(default_factory=list)   # one per generated token

    @property
    def time_to_first_token(self) -> Optional[float]:
        if self.first_token_time is None:
            return None
        return self.first_token_time - self.arrival_time


@dataclass
class CompletionOutput:
    """One generated sequence. finish_reason: None while running, else "stop",
    "length", "abort" or "ignored". stop_reason: the stop string or stop token id
    that ended it (None for EOS, length, abort); for "ignored" the reason text."""

    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: Optional[float]
    logprobs: Optional[list[PositionLogprobs]]
    finish_reason: Optional[str] = None
    stop_reason: int | str | None = None

    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    """A request's outputs so far (cumulative), or only what is new since the
    last step when the request was added with stream=True (delta mode)."""

    request_id: str
    prompt: Optional[str]
    prompt_token_ids: list[int]
    prompt_logprobs: Optional[list[Optional[PositionLogprobs]]]
    outputs: list[CompletionOutput]
    finished: bool
    metrics: RequestMetrics
