"""Continuous-batching scheduler: waiting / running / swapped queues. No torch.

A step is `out = schedule()`, the model runs `out`, then `update(out, sampled)`.

schedule() fills one step under two budgets (at most max_num_seqs sequences
running, at most max_num_batched_tokens tokens computed), in this order:
  1. running requests in arrival order: a decode (1 token) or the next prefill
     chunk (min(rest, budget left));
  2. swapped requests, swapped back in (arrival order) -- not in a step that
     preempted, since preemption means the GPU has no room;
  3. waiting requests, admitted strictly first-come-first-served: the first one
     that does not fit stops admission (no later one jumps it); nothing is
     admitted while a request is still swapped out or after a preemption.

Slots. The block manager is shown only tokens that have KV by the end of the
step being scheduled (the sequence, or a prefix copy of it for a chunk), so every
scheduled token has a slot before the step runs and every block it registers in
the prefix cache is written by then (it registers blocks as they fill, before
their KV exists). Admission allocate()s the first chunk; each later step
append_slots() its chunk. A decode: update() appends the sampled token at
position p = len - 1 without a slot; the next schedule() computes p, calling
append_slots first -- so a block is taken only by the step that writes it, and
running out there is what triggers preemption. The block manager decides how
cheap that call is (one fast path, there: a slot inside a last block the
sequence owns alone costs a few comparisons).

Preemption (which request goes, and where): see engine/core/preemption.py.

With chunked prefill off a prompt is computed whole in its admission step; only
a re-prefill (prompt + outputs after recompute) longer than
max_num_batched_tokens is split into chunks, as it could never run otherwise.

Feasibility. add_request() reports a request that can never finish as
FINISHED_IGNORED with .error, in the next SchedulerOutput.ignored (rules in
engine/core/admission.py). Every admitted request fits alone on an empty GPU, so the
oldest live request is never preempted (only the latest is, and alone it fits)
and gets the budget first, which bounds progress (see conformance/sim_driver.py
for the step bound).

abort(request_id) frees the request from any queue and returns True; an unknown
or finished id is a reported no-op (returns False): a client may abort a request
that has just finished. Call it between steps or after the model ran, not
between schedule() and the model run (blocks registered for that step would be
left cached without their KV).
"""
from __future__ import annotations

import operator
from collections import deque
from collections.abc import Iterable

from engine.core.admission import infeasibility, largest_allocatable
from engine.core.block.block_manager import AllocStatus, BlockManager, NoFreeBlocksError
from engine.core.config import CacheConfig, SchedulerConfig
from engine.core.kv_memory import cdiv
from engine.core.preemption import Preemptor
from engine.core.request import Request, insert_by_arrival
from engine.core.scheduler_output import ScheduledSequence, SchedulerOutput
from engine.core.sequence import Sequence, SequenceStatus
from engine.core.step_update import apply_sampled

_RUNNING = SequenceStatus.RUNNING
_seq_id = operator.attrgetter("seq_id")
_computed = operator.attrgetter("num_computed_tokens")


def _prefix(seq: Sequence, num_tokens: int) -> Sequence:
    """What the block manager should see of a sequence mid-prefill."""
    return Sequence(seq.seq_id, seq.token_ids[:num_tokens])


class Scheduler:
    def __init__(self, scheduler_config: SchedulerConfig, cache_config: CacheConfig) -> None:
        self.config = scheduler_config
        self.cache_config = cache_config
        self.block_manager = BlockManager(
            block_size=cache_config.block_size, num_gpu_blocks=cache_config.num_gpu_blocks,
            num_cpu_blocks=cache_config.num_cpu_blocks,
            enable_prefix_caching=cache_config.enable_prefix_caching,
            watermark=cache_config.watermark)
        # Each queue is kept sorted by arrival.
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.swapped: deque[Request] = deque()
        self.requests: dict[str, Request] = {}          # live (unfinished) requests
        self.num_preemptions = {"recompute": 0, "swap": 0}
        self._preemptor = Preemptor(self.block_manager, scheduler_config.preemption_mode)
        self._ignored: list[Request] = []               # for the next schedule()
        self._next_arrival = 0
        self._pending: SchedulerOutput | None = None    # scheduled, not yet updated
        self._pool_tokens = largest_allocatable(self.block_manager, cache_config,
                                                scheduler_config.max_model_len)

    # ---- requests ---------------------------------------------------------------
    def add_request(self, request_id: str, prompt_token_ids: list[int], max_tokens: int,
                    eos_token_ids: Iterable[int] = (), stop_token_ids: Iterable[int] = (),
                    ignore_eos: bool = False) -> Request:
        if request_id in self.requests:
            raise ValueError(f"request_id {request_id!r} is already live")
        arrival = self._next_arrival
        seq = Sequence(arrival, prompt_token_ids)       # arrival doubles as a unique seq id
        req = Request(request_id, seq, arrival, max_tokens, eos_token_ids,
                      stop_token_ids, ignore_eos, self.config.max_model_len)
        self._next_arrival += 1
        error = infeasibility(req, self.config, self.cache_config, self._pool_tokens)
        if error is not None:
            req.error = error
            seq.status = SequenceStatus.FINISHED_IGNORED
            self._ignored.append(req)
        else:
            self.requests[request_id] = req
            self.waiting.append(req)
        return req

    def abort(self, request_id: str) -> bool:
        """Finish a live request as FINISHED_ABORTED and free its blocks.
        Returns False, changing nothing, for an unknown or finished id."""
        req = self.requests.pop(request_id, None)
        if req is None:
            return False
        status = req.seq.status
        if status is SequenceStatus.WAITING:
            self.waiting.remove(req)
        elif status is _RUNNING:
            self.running.remove(req)
        else:
            self.swapped.remove(req)
        self.block_manager.free(req.seq)                # a no-op without blocks
        req.seq.status = SequenceStatus.FINISHED_ABORTED
        return True

    def has_unfinished(self) -> bool:
        return bool(self.requests) or bool(self._ignored)

    # ---- one step ------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        if self._pending is not None:
            raise RuntimeError("schedule() called before update() of the previous step")
        out = SchedulerOutput(ignored=self._ignored)
        self._ignored = []
        budget = self._schedule_running(out, self.config.max_num_batched_tokens)
        if not out.preempted:
            budget = self._schedule_swapped(out, budget)
            if not self.swapped:
                budget = self._schedule_waiting(out, budget)
        out.num_batched_tokens = self.config.max_num_batched_tokens - budget
        if out.decodes or out.prefills:
            self._pending = out
        return out

    def _schedule_running(self, out: SchedulerOutput, budget: int) -> int:
        """Running requests in arrival order. A run of decodes is planned in a
        tight loop and gets its slots from the block manager in one batch
        (append_slots_batch), before anything else asks it for blocks, so blocks
        are still taken in arrival order; a prefill chunk gets its slots alone."""
        running, bm = self.running, self.block_manager
        decodes, copies_out = out.decodes, out.blocks_to_copy
        i = 0                                           # running[i] is next
        while True:
            first, planned = i, len(decodes)
            for req in running[i:i + budget]:           # the hot loop: 1 token each
                seq = req.seq
                if len(seq.token_ids) - seq.num_computed_tokens != 1 or not seq.output_token_ids:
                    break                               # not a decode
                decodes.append(seq)
            got = bm.append_slots_batch(decodes, planned, copies_out)
            # Bookkeeping of the decodes that got slots, in C loops.
            out.decode_requests.extend(running[first:first + got - planned])
            out.decode_starts.extend(map(_computed, decodes[planned:got]))
            out.sample_seq_ids.update(map(_seq_id, decodes[planned:got]))
            budget -= got - planned
            i = first + got - planned
            if got < len(decodes):                      # running[i] found no room
                del decodes[got:]
                req = running[i]
                copies = self._make_room(req, req.seq, out)
                if copies is None:
                    return budget                       # req preempted itself
                copies_out.extend(copies)
                self._record(req, req.seq.num_computed_tokens, 1, 1, out)
                budget -= 1
                i += 1
                continue
            if i >= len(running) or not budget:
                return budget
            req = running[i]                            # a prefill chunk
            seq = req.seq
            start = seq.num_computed_tokens
            remaining = len(seq.token_ids) - start
            n = budget if remaining > budget else remaining   # a started prefill goes on
            view = seq if n == remaining else _prefix(seq, start + n)
            try:
                copies = bm.append_slots(view)          # raises before changing anything
            except NoFreeBlocksError:
                copies = self._make_room(req, view, out)
                if copies is None:
                    return budget                       # req preempted itself
            copies_out.extend(copies)
            self._record(req, start, n, remaining, out)
            budget -= n
            i += 1

    def _schedule_swapped(self, out: SchedulerOutput, budget: int) -> int:
        bm, swapped, bs = self.block_manager, self.swapped, self.cache_config.block_size
        while swapped and budget and len(self.running) < self.config.max_num_seqs:
            req = swapped[0]
            seq = req.seq
            start = seq.num_computed_tokens
            remaining = len(seq) - start
            n = self._chunk(remaining, budget)
            if not n:
                break
            # Room for its blocks plus those this step's tokens add.
            held = bm.num_blocks_of(seq)
            extra = max(0, cdiv(start + n, bs) - held)
            if not bm.can_swap_in(seq) or bm.num_free_gpu_blocks < held + extra:
                break
            swapped.popleft()
            out.blocks_to_swap_in.update(bm.swap_in(seq))
            out.blocks_to_copy.extend(
                bm.append_slots(seq if n == remaining else _prefix(seq, start + n)))
            self._start(req, start, n, remaining, out)
            budget -= n
        return budget

    def _schedule_waiting(self, out: SchedulerOutput, budget: int) -> int:
        bm, waiting = self.block_manager, self.waiting
        while waiting and budget and len(self.running) < self.config.max_num_seqs:
            req = waiting[0]
            seq = req.seq
            cached = bm.get_num_cached_tokens(seq)      # prefix hits count as computed
            remaining = len(seq) - cached
            n = self._chunk(remaining, budget)
            if not n:
                break
            view = seq if n == remaining else _prefix(seq, cached + n)
            status = bm.can_allocate(view)
            if status is AllocStatus.LATER:
                break
            waiting.popleft()
            if status is AllocStatus.NEVER:             # admission.py rules this out
                self._finish_ignored(req, f"needs {len(view)} tokens of KV, more than "
                                     f"the GPU pool can ever hold")
                continue
            bm.allocate(view)
            if bm.get_num_cached_tokens(seq) != cached:
                raise RuntimeError(f"prefix hits of {req.request_id!r} changed between "
                                   f"lookup and allocate")
            seq.num_computed_tokens = cached
            self._start(req, cached, n, remaining, out)
            budget -= n
        return budget

    def _make_room(self, req: Request, view: Sequence,
                   out: SchedulerOutput) -> list[tuple[int, int]] | None:
        """Preempt the latest running requests until `view` gets its slots;
        returns append_slots' copies, or None when `req` itself had to go."""
        running = self.running
        while True:
            victim = running.pop()                      # the latest arrival
            mode = self._preemptor.preempt(victim, out)
            insert_by_arrival(self.swapped if mode == "swap" else self.waiting, victim)
            self.num_preemptions[mode] += 1
            if victim is req:
                return None
            try:
                return self.block_manager.append_slots(view)
            except NoFreeBlocksError:
                continue

    def _chunk(self, remaining: int, budget: int) -> int:
        """Tokens to compute now for a swapped-in or admitted request; 0: wait."""
        if remaining <= budget:
            return remaining
        cfg = self.config
        if cfg.enable_chunked_prefill or remaining > cfg.max_num_batched_tokens:
            return budget
        return 0

    def _start(self, req: Request, start: int, n: int, remaining: int,
               out: SchedulerOutput) -> None:
        """Move a swapped-in or admitted request to running; its slots are in place."""
        req.seq.status = _RUNNING
        insert_by_arrival(self.running, req)
        self._record(req, start, n, remaining, out)

    @staticmethod
    def _record(req: Request, start: int, n: int, remaining: int,
                out: SchedulerOutput) -> None:
        """Put `n` tokens of `req` from `start` into the step (slots in place)."""
        seq = req.seq
        if n == remaining:
            out.sample_seq_ids.add(seq.seq_id)
            if n == 1 and seq.output_token_ids:         # its last sampled token: a decode
                out.decodes.append(seq)
                out.decode_requests.append(req)
                out.decode_starts.append(start)
                return
        out.prefills.append(ScheduledSequence(req, seq, start, n, True, n == remaining))
        out.num_prefill_tokens += n

    def _finish_ignored(self, req: Request, error: str) -> None:
        req.error = error
        req.seq.status = SequenceStatus.FINISHED_IGNORED
        del self.requests[req.request_id]
        self._ignored.append(req)

    # ---- after the model ran -----------------------------------------------------
    def update(self, output: SchedulerOutput, sampled: dict[int, int]) -> list[Request]:
        """Advance the sequences of `output` by the tokens the step computed.

        sampled: seq_id -> token id for each id in output.sample_seq_ids (one of
        a request aborted since schedule() may be given or left out).
        Returns the requests this step finished (stop token or length); their
        blocks are freed. Ignored requests are reported in output.ignored."""
        if output is not self._pending:
            if not output.decodes and not output.prefills:
                return []                               # nothing ran
            raise ValueError("output is not the pending step's (already updated, or stale)")
        finished = apply_sampled(output, sampled)
        self._pending = None
        if finished:
            for req in finished:
                self.block_manager.free(req.seq)
                del self.requests[req.request_id]
            self.running = [r for r in self.running if r.seq.status is _RUNNING]
        return finished
