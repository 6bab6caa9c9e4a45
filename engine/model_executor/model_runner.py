"""The model runner: one SchedulerOutput in, the logits of its sampling rows out.

Per step (docs/architecture.md, "One step, as data"): the swap-out, swap-in and
copy-on-write maps are applied first, in that order; the flat batch (input ids,
positions, AttentionMetadata) is built and validated once; the model runs over
every scheduled token with no padding; logits are computed only for the rows
that sample (and, for requests that asked for prompt logprobs, their prompt rows).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch

from engine.attention.metadata import AttentionMetadata, build_metadata
from engine.core.scheduler_output import ScheduledSequence, SchedulerOutput
from engine.core.sequence import Sequence
from engine.model_executor.kv_cache import KVCache


class CausalLM(Protocol):
    def __call__(self, input_ids: torch.Tensor, positions: torch.Tensor,
                 kv_caches: list[torch.Tensor], kv_scales: list[torch.Tensor | None],
                 metadata: AttentionMetadata) -> torch.Tensor: ...

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor: ...


@dataclass
class PromptRows:
    """Logits rows of one prompt chunk, for prompt logprobs: row k predicts the
    token at position first_target + k."""

    request_id: str
    first_target: int
    rows: slice


@dataclass
class StepInput:
    input_ids: torch.Tensor
    positions: torch.Tensor
    metadata: AttentionMetadata
    scheduled: list[ScheduledSequence]
    sampling: list[ScheduledSequence]      # in the order of the logits rows
    sample_index: torch.Tensor             # row of the flat batch per sampling sequence
    prompt_rows: list[PromptRows]
    prompt_index: torch.Tensor | None      # flat rows whose logits prompt logprobs need


@dataclass
class StepResult:
    logits: torch.Tensor                   # float32 [len(sampling), vocab]
    prompt_logits: torch.Tensor | None     # float32 [rows of prompt_rows, vocab]
    step_input: StepInput


class ModelRunner:
    def __init__(self, model: CausalLM, kv_cache: KVCache, device: torch.device) -> None:
        self.model = model
        self.kv_cache = kv_cache
        self.device = device

    def prepare(self, out: SchedulerOutput, block_table_of: Callable[[Sequence], list[int]],
                wants_prompt_logprobs: Callable[[ScheduledSequence], bool]) -> StepInput:
        """The flat batch of one step: decodes first, then prefill chunks."""
        scheduled = out.scheduled
        ids: list[int] = []
        positions: list[int] = []
        tables, query_lens, context_lens = [], [], []
        sampling: list[ScheduledSequence] = []
        sample_rows: list[int] = []
        prompt_rows: list[PromptRows] = []
        prompt_flat: list[int] = []
        for s in scheduled:
            seq, start, n = s.seq, s.start, s.num_new_tokens
            row0 = len(ids)
            ids.extend(seq.token_ids[start:start + n])
            positions.extend(range(start, start + n))
            tables.append(block_table_of(seq))
            query_lens.append(n)
            context_lens.append(start + n)
            if s.do_sample:
                sampling.append(s)
                sample_rows.append(row0 + n - 1)
            if s.is_prompt and wants_prompt_logprobs(s):
                # Row k predicts the token at start + k + 1, while that is a prompt token.
                count = min(n, seq.prompt_len - 1 - start)
                if count > 0:
                    first = len(prompt_flat)
                    prompt_flat.extend(range(row0, row0 + count))
                    prompt_rows.append(PromptRows(s.request.request_id, start + 1,
                                                  slice(first, first + count)))
        kv = self.kv_cache
        metadata = build_metadata(tables, query_lens, context_lens, len(out.decodes),
                                  kv.shape.block_size, kv.num_blocks, self.device)
        dev = self.device
        return StepInput(
            input_ids=torch.tensor(ids, dtype=torch.int64, device=dev),
            positions=torch.tensor(positions, dtype=torch.int64, device=dev),
            metadata=metadata, scheduled=scheduled, sampling=sampling,
            sample_index=torch.tensor(sample_rows, dtype=torch.int64, device=dev),
            prompt_rows=prompt_rows,
            prompt_index=(torch.tensor(prompt_flat, dtype=torch.int64, device=dev)
                          if prompt_flat else None))

    def apply_block_moves(self, out: SchedulerOutput) -> None:
        """Swap-out, then swap-in, then copy-on-write (the order the scheduler states)."""
        kv = self.kv_cache
        kv.swap_out(out.blocks_to_swap_out)
        kv.swap_in(out.blocks_to_swap_in)
        kv.copy(out.blocks_to_copy)

    @torch.inference_mode()
    def execute(self, step: StepInput) -> StepResult:
        """Run the model over a prepared step (after apply_block_moves)."""
        kv = self.kv_cache
        hidden = self.model(step.input_ids, step.positions, kv.device_caches,
                            kv.layer_scales(), step.metadata)
        logits = self.model.compute_logits(hidden.index_select(0, step.sample_index)).float()
        prompt_logits = None
        if step.prompt_index is not None:
            prompt_logits = self.model.compute_logits(
                hidden.index_select(0, step.prompt_index)).float()
        return StepResult(logits, prompt_logits, step)
