"""LLMEngine: add_request / step / abort_request over the scheduler, the model
runner and the sampler, in three phases: schedule -> execute -> process.

One step: `Scheduler.schedule()` picks the work; the runner applies the block
moves and runs the model over the flat batch; the sampler turns the logits rows
into tokens; `Scheduler.update()` advances the sequences; the detokenizer and
the stop-string check turn tokens into RequestOutputs (docs/architecture.md).

Aborts happen only between steps: the block manager registers a step's full
blocks in the prefix cache before their KV is written, so freeing them between
schedule() and the model run would leave cached blocks without KV. An abort
asked for while a step runs (another thread) is queued and applied at the start
of the next step.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, Optional, Union

from engine.core.config import CacheConfig, SchedulerConfig
from engine.core.scheduler import Scheduler
from engine.engine_args import EngineArgs
from engine.engine_setup import EngineParts, build_engine_parts
from engine.observer import EngineObserver
from engine.outputs import RequestOutput
from engine.request_state import RequestState
from engine.sampling.sampling_params import SamplingParams
from engine.step_processor import StepProcessor

Prompt = Union[str, Mapping[str, Any]]


class LLMEngine:
    def __init__(self, args: EngineArgs, parts: EngineParts) -> None:
        self.engine_args = args
        self.model_config = parts.hf_config
        self.tokenizer = parts.tokenizer
        self.device = parts.device
        self.dtype = parts.dtype
        self.log_lines = parts.log_lines
        self.scheduler_config = SchedulerConfig(
            max_num_seqs=args.max_num_seqs, max_num_batched_tokens=parts.max_num_batched_tokens,
            max_model_len=parts.max_model_len, enable_chunked_prefill=args.enable_chunked_prefill,
            preemption_mode=args.preemption_mode or "recompute")
        self.cache_config = CacheConfig(
            block_size=args.block_size, num_gpu_blocks=parts.num_gpu_blocks,
            num_cpu_blocks=parts.num_cpu_blocks, enable_prefix_caching=args.enable_prefix_caching)
        self.scheduler = Scheduler(self.scheduler_config, self.cache_config)
        self.runner = parts.runner
        self.vocab_size = parts.vocab_size
        self.eos_token_ids = parts.eos_token_ids
        self._states: dict[str, RequestState] = {}
        self._observers: list[EngineObserver] = []
        self._pending_aborts: list[str] = []
        self._abort_lock = threading.Lock()
        self._in_step = False
        self._step_no = 0
        self.stats = {"steps": 0, "prompt_tokens": 0, "generation_tokens": 0,
                      "prefix_cache_queries": 0, "prefix_cache_hits": 0}
        self._processor = StepProcessor(self, parts.sampler)

    @classmethod
    def from_engine_args(cls, args: EngineArgs) -> "LLMEngine":
        return cls(args, build_engine_parts(args))

    # ---- observers -------------------------------------------------------------
    def add_observer(self, observer: EngineObserver) -> None:
        self._observers.append(observer)

    def remove_observer(self, observer: EngineObserver) -> None:
        self._observers.remove(observer)

    @property
    def observers(self) -> list[EngineObserver]:
        return self._observers

    # ---- requests -----------------------------------------------------------------
    def add_request(self, request_id: str, prompt: Prompt,
                    params: Optional[SamplingParams] = None, arrival_time: Optional[float] = None,
                    stream: bool = False) -> None:
        """Queue a request. `prompt`: text, or {"prompt_token_ids": [...]} (optionally with
        "prompt" text beside it). ValueError, with nothing queued, for bad input."""
        self._processor.add_request(request_id, prompt, params or SamplingParams(),
                                    time.monotonic() if arrival_time is None else arrival_time,
                                    stream)

    def abort_request(self, request_id: Union[str, Iterable[str]]) -> list[str]:
        """Abort live requests by id (an unknown or finished id is a no-op). Returns
        the ids aborted now; inside a running step, the abort waits for its end."""
        ids = [request_id] if isinstance(request_id, str) else list(request_id)
        with self._abort_lock:
            if self._in_step:
                self._pending_aborts.extend(ids)
                return []
        return [rid for rid in ids if self._processor.abort(rid)]

    def has_unfinished_requests(self) -> bool:
        return self.scheduler.has_unfinished()

    def get_num_unfinished_requests(self) -> int:
        return len(self.scheduler.requests)

    # ---- one step -------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """Schedule, run and process one step; the outputs of every request that
        produced something or finished in it."""
        with self._abort_lock:
            pending, self._pending_aborts = self._pending_aborts, []
            self._in_step = True
        try:
            for rid in pending:
                self._processor.abort(rid)
            self._step_no += 1
            self.stats["steps"] += 1
            return self._processor.run_step(self._step_no)
        finally:
            with self._abort_lock:
                self._in_step = False

    # ---- stats ------------------------------------------------------------------------
    def get_stats(self) -> dict[str, Any]:
        s, bm = self.scheduler, self.scheduler.block_manager
        queries = self.stats["prefix_cache_queries"]
        return {
            "running": len(s.running), "waiting": len(s.waiting), "swapped": len(s.swapped),
            "free_gpu_blocks": bm.num_free_gpu_blocks, "free_cpu_blocks": bm.num_free_cpu_blocks,
            "num_gpu_blocks": self.cache_config.num_gpu_blocks,
            "num_cpu_blocks": self.cache_config.num_cpu_blocks,
            "preemptions": dict(s.num_preemptions),
            "prefix_cache_hit_rate": (self.stats["prefix_cache_hits"] / queries) if queries else 0.0,
            "prompt_tokens": self.stats["prompt_tokens"],
            "generation_tokens": self.stats["generation_tokens"],
            "steps": self.stats["steps"],
        }
