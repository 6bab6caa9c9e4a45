"""The engine's request intake and its per-step work (schedule -> execute -> process).

Kept apart from LLMEngine so that the public class reads as the API and this
file as the step. Input is checked here, before anything reaches the scheduler:
a bad request raises ValueError and leaves the engine exactly as it was.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from engine.detokenizer import IncrementalDetokenizer, find_stop, truncate_at_stop
from engine.observer import (RequestAdded, RequestFinished, StepExecuted, StepScheduled,
                             TokensSampled)
from engine.outputs import Logprob, RequestOutput
from engine.request_state import RequestState, SequenceText
from engine.sampling.logprobs import compute_logprobs
from engine.sampling.sampler import Sampler, SamplingRow, make_generator
from engine.sampling.sampling_params import SamplingParams

if TYPE_CHECKING:
    from engine.llm_engine import LLMEngine

PHASES = ("schedule", "prepare", "forward", "sample", "update", "detokenize")


class StepProcessor:
    def __init__(self, engine: "LLMEngine", sampler: Sampler) -> None:
        self.engine = engine
        self.sampler = sampler
        self.phase_seconds = dict.fromkeys(PHASES, 0.0)

    # ---- intake -----------------------------------------------------------------
    def _prompt_ids(self, request_id: str, prompt: Any) -> tuple[str | None, list[int]]:
        eng = self.engine
        if isinstance(prompt, str):
            if eng.tokenizer is None:
                raise ValueError(f"request {request_id!r}: a text prompt needs a tokenizer "
                                 f"(this engine has none: skip_tokenizer_init or no tokenizer "
                                 f"files); pass {{'prompt_token_ids': [...]}}")
            text, ids = prompt, list(eng.tokenizer.encode(prompt))
        elif isinstance(prompt, Mapping) and "prompt_token_ids" in prompt:
            text, ids = prompt.get("prompt"), prompt["prompt_token_ids"]
            if not isinstance(ids, (list, tuple)) or any(
                    isinstance(t, bool) or not isinstance(t, int) for t in ids):
                raise ValueError(f"request {request_id!r}: prompt_token_ids must be a list of "
                                 f"ints, got {ids!r:.80}")
            ids = list(ids)
        else:
            raise ValueError(f"request {request_id!r}: prompt must be a string or a dict with "
                             f"'prompt_token_ids', got {type(prompt).__name__}")
        if not ids:
            raise ValueError(f"request {request_id!r}: the prompt is empty (no tokens)")
        bad = [t for t in ids if not 0 <= t < eng.vocab_size]
        if bad:
            raise ValueError(f"request {request_id!r}: token ids {bad[:5]} lie outside the "
                             f"vocabulary [0, {eng.vocab_size})")
        return text, ids

    def add_request(self, request_id: str, prompt: Any, params: SamplingParams,
                    arrival_time: float, stream: bool) -> None:
        eng, sched = self.engine, self.engine.scheduler
        if not isinstance(request_id, str) or not request_id:
            raise ValueError(f"request_id must be a non-empty string, got {request_id!r}")
        if not isinstance(params, SamplingParams):
            raise ValueError(f"request {request_id!r}: params must be SamplingParams, got "
                             f"{type(params).__name__}")
        # _states holds exactly the requests not yet reported finished (ignored ones too).
        if request_id in sched.requests or request_id in self._states:
            raise ValueError(f"request_id {request_id!r} is already live")
        text, ids = self._prompt_ids(request_id, prompt)
        if params.n > eng.scheduler_config.max_num_seqs:
            raise ValueError(f"request {request_id!r}: n={params.n} is larger than "
                             f"max_num_seqs={eng.scheduler_config.max_num_seqs}")
        if params.prompt_logprobs is not None and eng.cache_config.enable_prefix_caching:
            raise ValueError(f"request {request_id!r}: prompt_logprobs needs every prompt "
                             f"token computed; it is not supported with enable_prefix_caching")
        for field_name in ("logprobs", "prompt_logprobs"):
            k = getattr(params, field_name)
            if k is not None and k > eng.vocab_size:
                raise ValueError(f"request {request_id!r}: {field_name}={k} exceeds the "
                                 f"vocabulary size {eng.vocab_size}")
        # max_tokens=None (vLLM's "as many as fit"): up to the end of the model's context.
        max_tokens = params.max_tokens
        if max_tokens is None:
            max_tokens = max(1, eng.scheduler_config.max_model_len - len(ids))
        req = sched.add_request(request_id, ids, max_tokens,
                                eos_token_ids=eng.eos_token_ids,
                                stop_token_ids=params.stop_token_ids or (),
                                ignore_eos=params.ignore_eos, n=params.n)
        generator = (make_generator(params.seed, eng.device) if params.seed is not None else None)
        state = RequestState(request_id, text, ids, params, req, generator, stream, arrival_time)
        state.texts[req.seq.seq_id] = self._new_text(state, 0)
        self._states[request_id] = state
        for obs in eng.observers:
            obs.request_added(RequestAdded(request_id, text, ids, params,
                                           [s.seq_id for s in req.seqs]))

    @property
    def _states(self) -> dict[str, RequestState]:
        return self.engine._states

    def abort(self, request_id: str) -> bool:
        state = self._states.get(request_id)
        if state is None or not self.engine.scheduler.abort(request_id):
            return False
        state.finish()
        del self._states[request_id]
        return True

    # ---- one step ---------------------------------------------------------------------
    def run_step(self, step_no: int) -> list[RequestOutput]:
        eng, sched, clock = self.engine, self.engine.scheduler, time.perf_counter
        t0 = clock()
        out = sched.schedule()
        t1 = clock()
        self.phase_seconds["schedule"] += t1 - t0
        now = time.monotonic()
        outputs: list[RequestOutput] = []
        for req in out.ignored:
            state = self._states.pop(req.request_id, None)
            if state is not None:
                state.finish(now)
                outputs.append(state.output())
        scheduled = out.scheduled
        self._note_scheduled(scheduled, now)
        if eng.observers:
            self._emit_scheduled(step_no, out, scheduled)
        runner = eng.runner
        runner.apply_block_moves(out)
        if not scheduled:
            return outputs
        bm = sched.block_manager
        step_in = runner.prepare(out, bm.get_block_table, self._wants_prompt_logprobs)
        t2 = clock()
        result = runner.execute(step_in)
        t3 = clock()
        # A request's first sample with n > 1 draws n tokens from its one logits row.
        counts = [out.samples_for(s.seq_id) for s in step_in.sampling]
        logits = result.logits
        if any(c > 1 for c in counts):
            repeat = torch.tensor(counts, device=logits.device)
            logits = logits.repeat_interleave(repeat, dim=0)
        rows = [row for s, c in zip(step_in.sampling, counts) for row in [self._row(s)] * c]
        sampled = self.sampler(logits, rows)
        t4 = clock()
        tokens: dict[int, Any] = {}
        drawn = iter(zip(sampled.token_ids, sampled.logprobs))
        per_seq = []                    # (ScheduledSequence, [(token, logprobs)] in sample order)
        for s, c in zip(step_in.sampling, counts):
            picks = [next(drawn) for _ in range(c)]
            per_seq.append((s, picks))
            tokens[s.seq_id] = picks[0][0] if c == 1 and s.seq_id not in out.num_samples else [
                t for t, _ in picks]
        finished = sched.update(out, tokens)
        t5 = clock()
        if eng.observers:
            md = step_in.metadata
            for obs in eng.observers:
                obs.step_executed(StepExecuted(step_no, step_in.input_ids.tolist(),
                                               step_in.positions.tolist(),
                                               md.slot_mapping.tolist(), t3 - t2))
        if result.prompt_logits is not None:
            self._prompt_logprobs(step_in, result.prompt_logits)
        changed = self._process_samples(step_no, per_seq, time.monotonic())
        finished_ids = {r.request_id for r in finished}
        for rid in changed:
            state = self._states.get(rid)
            if state is None:
                continue
            if state.request.is_finished or rid in finished_ids:
                state.finish()
                del self._states[rid]
                for obs in eng.observers:
                    obs.request_finished(RequestFinished(
                        step_no, rid, [t.finish_reason or state.request.finish_reason
                                       for t in state.texts.values()],
                        free_gpu_blocks=bm.num_free_gpu_blocks))
            outputs.append(state.output())
        t6 = clock()
        ph = self.phase_seconds
        ph["prepare"] += t2 - t1
        ph["forward"] += t3 - t2
        ph["sample"] += t4 - t3
        ph["update"] += t5 - t4
        ph["detokenize"] += t6 - t5
        return outputs

    def _note_scheduled(self, scheduled: list, now: float) -> None:
        stats = self.engine.stats
        for s in scheduled:
            state = self._states.get(s.request.request_id)
            if state is None:
                continue
            if state.metrics.first_scheduled_time is None:
                state.metrics.first_scheduled_time = now
                stats["prefix_cache_queries"] += s.seq.prompt_len
                stats["prefix_cache_hits"] += s.start
            if s.is_prompt:
                stats["prompt_tokens"] += s.num_new_tokens

    def _emit_scheduled(self, step_no: int, out: Any, scheduled: list) -> None:
        sched = self.engine.scheduler
        bm = sched.block_manager
        tables = {s.seq_id: bm.get_block_table(s.seq) for s in scheduled}
        queues = {"waiting": [r.request_id for r in sched.waiting],
                  "running": [r.request_id for r in sched.running],
                  "swapped": [r.request_id for r in sched.swapped]}
        event = StepScheduled(
            step_no, scheduled, out.num_batched_tokens, out.num_prefill_tokens,
            out.num_decode_tokens, dict(out.blocks_to_swap_in), dict(out.blocks_to_swap_out),
            list(out.blocks_to_copy), list(out.preempted), [r.request_id for r in out.ignored],
            queues, tables, bm.num_free_gpu_blocks, bm.num_free_cpu_blocks)
        for obs in self.engine.observers:
            obs.step_scheduled(event)

    def _wants_prompt_logprobs(self, s: Any) -> bool:
        state = self._states.get(s.request.request_id)
        return state is not None and state.prompt_logprobs is not None

    def _row(self, s: Any) -> SamplingRow:
        state = self._states[s.request.request_id]
        seq = s.seq
        return SamplingRow(state.params, seq.prompt_token_ids, seq.output_token_ids,
                           state.generator, tuple(self.engine.eos_token_ids))

    def _decode(self, token_id: int) -> str | None:
        tok = self.engine.tokenizer
        return None if tok is None else tok.convert_ids_to_tokens(token_id)

    def _position(self, entry: Any) -> dict[int, Logprob]:
        return {tid: Logprob(lp, rank, self._decode(tid))
                for tid, (lp, rank) in entry.as_dict().items()}

    def _prompt_logprobs(self, step_in: Any, logits: Any) -> None:
        for pr in step_in.prompt_rows:
            state = self._states.get(pr.request_id)
            if state is None or state.prompt_logprobs is None:
                continue
            have = len(state.prompt_logprobs)
            count = pr.rows.stop - pr.rows.start
            # A recomputed prompt is prefilled again: keep the first computation.
            skip = have - pr.first_target
            if skip >= count or skip < 0:
                continue
            targets = state.prompt_token_ids[pr.first_target + skip:pr.first_target + count]
            rows = logits[pr.rows.start + skip:pr.rows.stop]
            k = state.params.prompt_logprobs
            for entry in compute_logprobs(rows, targets, [k] * len(targets)):
                state.prompt_logprobs.append(self._position(entry))

    def _process_samples(self, step_no: int, per_seq: list, now: float) -> list[str]:
        """Text, logprobs and stop strings of the sampled tokens; returns the ids
        of the requests that changed, in order. A first sample of n went to the
        request's sequences 0..n-1 (the parent and its new children)."""
        eng = self.engine
        changed: dict[str, None] = {}
        events = []
        for s, picks in per_seq:
            rid = s.request.request_id
            state = self._states.get(rid)
            if state is None:
                continue
            seqs = state.request.seqs[:len(picks)] if len(picks) > 1 else [s.seq]
            for seq, (token, lp) in zip(seqs, picks):
                st = state.texts.get(seq.seq_id)
                if st is None:                          # a child forked this step
                    st = state.texts[seq.seq_id] = self._new_text(state, len(state.texts))
                state.note_token(now)
                eng.stats["generation_tokens"] += 1
                if lp is not None and st.logprobs is not None:
                    st.logprobs.append(self._position(lp))
                    st.cumulative_logprob += lp.logprob
                delta = self._text_delta(state, st, seq, token)
                if eng.observers:
                    events.append((rid, seq.seq_id, token, delta))
            changed[rid] = None
        if events:
            for obs in eng.observers:
                obs.tokens_sampled(TokensSampled(step_no, events))
        return list(changed)

    def _new_text(self, state: RequestState, index: int) -> SequenceText:
        tok = self.engine.tokenizer
        detok = (IncrementalDetokenizer(tok, state.prompt_token_ids, state.params.skip_special_tokens)
                 if tok is not None else None)
        return SequenceText(index, detok, state.params.logprobs is not None)

    def _text_delta(self, state: RequestState, st: SequenceText, seq: Any, token: int) -> str:
        """Append the token's text; finish the sequence at a stop string."""
        params = state.params
        done = seq.status.is_finished
        if done and seq.finish_reason == "stop" and token in (params.stop_token_ids or ()):
            st.stop_reason = token
            if not params.include_stop_str_in_output:
                return ""
        if st.detokenizer is None:
            return ""
        delta = st.detokenizer.append(token)
        if done:
            delta += st.detokenizer.flush()
        before = len(st.text)
        st.text += delta
        if params.stop and len(seq.output_token_ids) >= params.min_tokens:
            match = find_stop(st.text, len(delta), params.stop)
            if match is not None:
                st.text = truncate_at_stop(st.text, match, params.include_stop_str_in_output)
                st.finish_reason, st.stop_reason = "stop", match[1]
                if not done:
                    self.engine.scheduler.finish_sequence(state.request_id, seq.seq_id)
        return st.text[before:]
