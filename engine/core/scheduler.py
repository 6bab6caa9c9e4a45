"""Continuous-batching scheduler: waiting / running / swapped queues. No torch.

A step is `out = schedule()`, the model runs `out`, then `update(out, sampled)`.

schedule() fills one step under two budgets (at most max_num_seqs sequences
running, at most max_num_batched_tokens tokens computed), in this order:
  1. running requests in arrival order: a decode (1 token) or the next prefill
     chunk (min(rest, budget left)) -- engine/core/schedule_running.py, which
     also says when a token gets its KV slot;
  2. swapped requests, swapped back in (arrival order) -- not in a step that
     preempted, since preemption means the GPU has no room;
  3. waiting requests, admitted strictly first-come-first-served: the first one
     that does not fit stops admission (no later one jumps it); nothing is
     admitted while a request is still swapped out or after a preemption.
Steps 2 and 3: engine/core/schedule_queued.py. This class owns the queues and
the requests; those modules plan, and hand back what joins or leaves a queue.

Preemption (which request goes, and where): see engine/core/preemption.py.

Parallel sampling (a request with n > 1). The request is prefilled once, as its
parent sequence; the step whose prompt chunk samples asks for n tokens
(SchedulerOutput.num_samples) and update() takes them as a list: it forks n - 1
children (Sequence.fork + BlockManager.fork), which share every prompt block --
copy-on-write of the partial last block happens as each one appends (the
append_slots copies) -- and gives each sequence one token. From then on the
group is scheduled whole: every live sequence gets a token each step (all or
none: it needs as much budget as it has live sequences; when less is left, no
running request after it runs this step, though waiting ones may be admitted
with the rest). It counts its sequences against max_num_seqs from admission
on, n before the fork. A sequence that
finishes frees its own blocks; the request finishes with its last one.
Preemption takes the whole group (engine/core/preemption.py); after a
recompute each sequence re-prefills its own tokens, all admitted in one step,
their chunks sharing the budget (each gets at least one token).

With chunked prefill off a prompt is computed whole in its admission step; only
a re-prefill (prompt + outputs after recompute; a group's together) longer than
max_num_batched_tokens is split into chunks, as it could never run otherwise.

Feasibility. add_request() reports a request that can never finish (n larger
than max_num_seqs among them) as FINISHED_IGNORED with .error, in the next
SchedulerOutput.ignored (rules in engine/core/admission.py); an invalid
argument is a ValueError. Every admitted request fits alone on an empty GPU, so the
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

from collections import deque
from collections.abc import Iterable

from engine.core.admission import infeasibility
from engine.core.block.block_manager import BlockManager
from engine.core.config import CacheConfig, SchedulerConfig
from engine.core.preemption import Preemptor
from engine.core.request import Request, insert_by_arrival
from engine.core.schedule_queued import schedule_queued
from engine.core.schedule_running import schedule_running
from engine.core.scheduler_output import SchedulerOutput
from engine.core.sequence import Sequence, SequenceStatus
from engine.core.step_update import apply_sampled

_RUNNING = SequenceStatus.RUNNING


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
        self._next_seq_id = 0
        self._num_running_seqs = 0                      # sum of running requests' width
        self._pending: SchedulerOutput | None = None    # scheduled, not yet updated

    # ---- requests ---------------------------------------------------------------
    def add_request(self, request_id: str, prompt_token_ids: list[int], max_tokens: int,
                    eos_token_ids: Iterable[int] = (), stop_token_ids: Iterable[int] = (),
                    ignore_eos: bool = False, n: int = 1) -> Request:
        """Queue a request of n sequences (n > 1: parallel sampling, each up to max_tokens)."""
        if request_id in self.requests:
            raise ValueError(f"request_id {request_id!r} is already live")
        seq = Sequence(self._next_seq_id, prompt_token_ids)
        req = Request(request_id, seq, self._next_arrival, max_tokens, eos_token_ids,
                      stop_token_ids, ignore_eos, self.config.max_model_len, n)
        self._next_arrival += 1
        self._next_seq_id += 1
        error = infeasibility(req, self.config, self.cache_config,
                              self.block_manager.max_allocatable_blocks)
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
        status = req.status
        if status is SequenceStatus.WAITING:
            self.waiting.remove(req)
        elif status is _RUNNING:
            self.running.remove(req)
            self._num_running_seqs -= req.width
        else:
            self.swapped.remove(req)
        for seq in req.live_seqs():
            self.block_manager.free(seq)                # a no-op without blocks
            seq.status = SequenceStatus.FINISHED_ABORTED
        return True

    def finish_sequence(self, request_id: str, seq_id: int) -> bool:
        """Finish one live sequence of a running request as FINISHED_STOPPED (the
        engine found a stop string in its text) and free its blocks; the request
        finishes with its last live sequence. Between steps only, as abort().
        Returns True when the request is now finished; ValueError for an unknown
        request or a sequence that is not one of its live ones."""
        req = self.requests.get(request_id)
        live = req.live_seqs() if req is not None else []
        seq = next((s for s in live if s.seq_id == seq_id), None)
        if seq is None:
            raise ValueError(f"finish_sequence: request {request_id!r} has no live sequence {seq_id}")
        if req.status is not _RUNNING:
            raise ValueError(f"finish_sequence: request {request_id!r} is not running")
        if len(live) == 1:
            self.abort(request_id)
            seq.status = SequenceStatus.FINISHED_STOPPED
            return True
        self.block_manager.free(seq)
        seq.status = SequenceStatus.FINISHED_STOPPED
        self._num_running_seqs -= 1
        return False

    def has_unfinished(self) -> bool:
        return bool(self.requests) or bool(self._ignored)

    @property
    def num_running_seqs(self) -> int:
        """Sequences the running requests hold against max_num_seqs (a group
        counts n until it forks, then its live sequences)."""
        return self._num_running_seqs

    # ---- one step ------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        if self._pending is not None:
            raise RuntimeError("schedule() called before update() of the previous step")
        out = SchedulerOutput(ignored=self._ignored)
        self._ignored = []
        budget = schedule_running(self.running, out, self.config.max_num_batched_tokens,
                                  self.block_manager, self.config, self._make_room)
        if not out.preempted:
            budget = self._schedule_queue(out, budget, self.swapped)
            if not self.swapped:
                budget = self._schedule_queue(out, budget, self.waiting)
        out.num_batched_tokens = self.config.max_num_batched_tokens - budget
        if out.decodes or out.prefills:
            self._pending = out
        return out

    def _make_room(self, req: Request, views: list[Sequence], out: SchedulerOutput) -> bool:
        """Preempt the latest running requests until all of `views` (of req) can
        get their slots; False when req itself had to go."""
        running, bm = self.running, self.block_manager
        while True:
            victim = running.pop()                      # the latest arrival
            self._num_running_seqs -= victim.width
            mode = self._preemptor.preempt(victim, out)
            insert_by_arrival(self.swapped if mode == "swap" else self.waiting, victim)
            self.num_preemptions[mode] += 1
            if victim is req:
                return False
            if bm.append_cost(views) <= bm.num_free_gpu_blocks:
                return True

    def _schedule_queue(self, out: SchedulerOutput, budget: int, queue: deque[Request]) -> int:
        """Start requests of `queue` (swapped or waiting); they join the running queue."""
        seats = self.config.max_num_seqs - self._num_running_seqs
        budget, started = schedule_queued(queue, queue is self.swapped, out, budget, seats,
                                          self.block_manager, self.config, self._finish_ignored)
        for req in started:
            insert_by_arrival(self.running, req)
            self._num_running_seqs += req.width
        return budget

    def _finish_ignored(self, req: Request, error: str) -> None:
        req.error = error
        for seq in req.live_seqs():
            seq.status = SequenceStatus.FINISHED_IGNORED
        del self.requests[req.request_id]
        self._ignored.append(req)

    # ---- after the model ran -----------------------------------------------------
    def update(self, output: SchedulerOutput,
               sampled: dict[int, int | list[int]]) -> list[Request]:
        """Advance the sequences of `output` by the tokens the step computed.

        sampled: seq_id -> token id for each id in output.sample_seq_ids (one of
        a request aborted since schedule() may be given or left out); for an id
        in output.num_samples, a list of that many token ids, one per sequence
        of the request (the first stays with the parent, the others go to new
        children, in order). Returns the requests this step finished (stop token
        or length on every sequence); a finished sequence's blocks are freed at
        once. Ignored requests are reported in output.ignored."""
        if output is not self._pending:
            if not output.decodes and not output.prefills:
                return []                               # nothing ran
            raise ValueError("output is not the pending step's (already updated, or stale)")
        done = apply_sampled(output, sampled, self._fork)
        self._pending = None
        finished: list[Request] = []
        for req, seq in done:
            self.block_manager.free(seq)
            self._num_running_seqs -= 1
            if (len(req.seqs) == 1 or req.is_finished) and req.request_id in self.requests:
                finished.append(req)                    # (once, if several of it end)
                del self.requests[req.request_id]
        if finished:
            gone = set(map(id, finished))
            self.running = [r for r in self.running if id(r) not in gone]
        return finished

    def _fork(self, req: Request, parent: Sequence, tokens: list[int]) -> list[Sequence]:
        """The children of a first sample, sharing every block of the parent."""
        children = []
        for token in tokens:
            child = parent.fork(self._next_seq_id)
            self._next_seq_id += 1
            self.block_manager.fork(parent, child)
            child.append_token_id(token)
            children.append(child)
        req.seqs.extend(children)
        req.is_group = True
        return children
