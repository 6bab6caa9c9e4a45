"""What the engine reports as it works. The engine never prints: the tracer
(`pagedlm trace`) and the stats subscribe through `LLMEngine.add_observer`.

Every hook has a no-op default, so an observer overrides only what it needs.
Events carry the engine's own objects (read them, never change them).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RequestAdded:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    params: Any                   # SamplingParams
    seq_ids: list[int]


@dataclass(frozen=True)
class StepScheduled:
    step: int
    scheduled: list[Any]          # ScheduledSequence: decodes first, then prefill chunks
    num_batched_tokens: int
    num_prefill_tokens: int
    num_decode_tokens: int
    blocks_to_swap_in: dict[int, int]
    blocks_to_swap_out: dict[int, int]
    blocks_to_copy: list[tuple[int, int]]
    preempted: list[str]
    ignored: list[str]
    queues: dict[str, list[str]]  # "waiting" / "running" / "swapped" -> request ids after scheduling
    block_tables: dict[int, list[int]]   # seq id -> its block table, for the scheduled sequences
    free_gpu_blocks: int
    free_cpu_blocks: int


@dataclass(frozen=True)
class StepExecuted:
    step: int
    input_ids: list[int]
    positions: list[int]
    slot_mapping: list[int]
    seconds: float


@dataclass(frozen=True)
class TokensSampled:
    step: int
    samples: list[tuple[str, int, int, str]]   # (request id, seq id, token id, text delta)


@dataclass(frozen=True)
class RequestFinished:
    step: int
    request_id: str
    finish_reasons: list[str | None]
    freed_blocks: dict[int, list[int]] = field(default_factory=dict)   # seq id -> its blocks
    free_gpu_blocks: int = 0


class EngineObserver:
    """Subclass and override the hooks you need."""

    def request_added(self, event: RequestAdded) -> None: ...

    def step_scheduled(self, event: StepScheduled) -> None: ...

    def step_executed(self, event: StepExecuted) -> None: ...

    def tokens_sampled(self, event: TokensSampled) -> None: ...

    def request_finished(self, event: RequestFinished) -> None: ...
