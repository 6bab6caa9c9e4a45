"""Drive the Scheduler with the simulated model and check it after every step.

Loop per step: arrivals and aborts, schedule(), check_step(), the simulated
model (swap/copy maps applied, new KV written, all KV read back), maybe an abort
between the model run and update(), update(). At the end: outputs against the
oracle, every block free.

Step bound (after the last arrival), for N feasible requests with longest
length W_i = min(prompt_i + max_tokens_i - 1, max_model_len), P = sum W_i and
O = sum max_tokens_i:
  - while R is the oldest live request and running, R is never preempted (only
    the latest running request is; alone it fits, by the feasibility rule) and
    goes first under the budget, so each step computes >= 1 of R's tokens:
    at most W_R + M_R steps;
  - while R is oldest and not running, nothing is admitted past it and only R
    may be swapped in past other swapped requests, so the running + swapped set
    S only shrinks. A step with running requests computes a token of the first
    one, or that one preempted itself after everyone else (running is then
    empty); with none running, the oldest swapped request (or R) comes in and
    computes. A member of S keeps its progress while in S (swap keeps KV; a
    recompute sends it to wait behind R), so that phase takes at most
    2 * (sum_{q != R} (W_q + M_q) + 1) + 1 steps.
Summing over the requests in arrival order: at most (2N + 1)(P + O) + 3N steps,
plus the step that reports the ignored requests of the last arrivals. A request
of n sequences (parallel sampling) counts n x (W_i + M_i) in P + O: each of its
sequences computes its own tokens, and the group gets a token a step while it
runs (its n <= max_num_batched_tokens, by the feasibility rule).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

from conformance.sim_model import kv_chain, kv_of, next_token, reference_generate
from engine.core.config import CacheConfig, SchedulerConfig
from engine.core.scheduler import Scheduler
from engine.core.scheduler_output import SchedulerOutput
from engine.core.sequence import SequenceStatus as S


@dataclass(frozen=True)
class Arrival:
    step: int
    request_id: str
    prompt: tuple[int, ...]
    max_tokens: int
    eos: tuple[int, ...] = ()
    n: int = 1


@dataclass
class DriveResult:
    steps: int = 0
    steps_after_last_arrival: int = 0
    bound: int = 0
    outputs: dict[str, list[list[int]]] = field(default_factory=dict)   # one per sequence
    reasons: dict[str, str | None] = field(default_factory=dict)        # the request's
    seq_reasons: dict[str, list[str | None]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    preemptions: dict[str, int] = field(default_factory=dict)
    group_preemptions: dict[str, int] = field(default_factory=lambda: {"recompute": 0, "swap": 0})
    max_batched_tokens: int = 0


def worst_len(a: Arrival, cfg: SchedulerConfig) -> int:
    return min(len(a.prompt) + a.max_tokens - 1, cfg.max_model_len)


def expected_infeasible(a: Arrival, cfg: SchedulerConfig, cache: CacheConfig) -> bool:
    """The feasibility rule (engine/core/admission.py) restated independently of the code."""
    if a.n > cfg.max_num_seqs or a.n > cfg.max_num_batched_tokens:
        return True
    if len(a.prompt) > cfg.max_model_len:
        return True
    if not cfg.enable_chunked_prefill and len(a.prompt) > cfg.max_num_batched_tokens:
        return True
    w = worst_len(a, cfg)
    usable = cache.num_gpu_blocks - int(cache.watermark * cache.num_gpu_blocks)
    return a.n * -(-w // cache.block_size) > usable


def step_bound(arrivals: list[Arrival], cfg: SchedulerConfig, cache: CacheConfig) -> int:
    feasible = [a for a in arrivals if not expected_infeasible(a, cfg, cache)]
    n = len(feasible)
    work = sum(a.n * (worst_len(a, cfg) + a.max_tokens) for a in feasible)
    return (2 * n + 1) * work + 3 * n + 1


class SimKV:
    """GPU and CPU block contents; runs one step of the simulated model."""

    def __init__(self, cache: CacheConfig) -> None:
        self.bs = cache.block_size
        self.gpu = [[None] * self.bs for _ in range(cache.num_gpu_blocks)]
        self.cpu = [[None] * self.bs for _ in range(cache.num_cpu_blocks)]

    def run(self, sched: Scheduler, out: SchedulerOutput,
            expected_kv: dict[int, list[int]]) -> dict[int, int]:
        gpu, cpu, bs, bm = self.gpu, self.cpu, self.bs, sched.block_manager
        for g, c in out.blocks_to_swap_out.items():
            cpu[c] = list(gpu[g])
        for c, g in out.blocks_to_swap_in.items():
            gpu[g] = list(cpu[c])
        for src, dst in out.blocks_to_copy:
            gpu[dst] = list(gpu[src])
        written: dict[tuple[int, int], int] = {}
        tables = {}
        for s in out.scheduled:       # write every new token's KV first (per layer)
            seq = s.seq
            table = tables[seq.seq_id] = bm.get_block_table(seq)
            want = expected_kv[seq.seq_id]
            for p in range(s.start, s.start + s.num_new_tokens):
                slot = (table[p // bs], p % bs)
                assert written.setdefault(slot, want[p]) == want[p], \
                    f"two sequences write different KV into slot {slot} in one step"
                gpu[slot[0]][slot[1]] = want[p]
        sampled = {}
        for s in out.scheduled:       # then attend over everything up to the new tokens
            seq, table = s.seq, tables[s.seq.seq_id]
            end = s.start + s.num_new_tokens
            read = [gpu[table[p // bs]][p % bs] for p in range(end)]
            want = expected_kv[seq.seq_id][:end]
            if read != want:
                bad = next(p for p in range(end) if read[p] != want[p])
                raise AssertionError(f"seq {seq.seq_id} reads wrong KV at position {bad} "
                                     f"(block {table[bad // bs]})")
            if s.do_sample:
                n = out.samples_for(seq.seq_id)
                sampled[seq.seq_id] = (next_token(read) if n == 1 else
                                       [next_token(read, i) for i in range(n)])
        return sampled


def _snapshot(sched: Scheduler) -> dict[str, S]:
    return {rid: r.status for rid, r in sched.requests.items()}


def check_step(sched: Scheduler, out: SchedulerOutput, before: dict[str, S],
               infeasible: set[str]) -> None:
    cfg, bs = sched.config, sched.cache_config.block_size
    waiting, running, swapped = list(sched.waiting), sched.running, list(sched.swapped)
    # Budgets: a request counts n sequences until it forks, then its live ones.
    assert out.num_batched_tokens == sum(s.num_new_tokens for s in out.scheduled)
    assert out.num_batched_tokens <= cfg.max_num_batched_tokens
    width = sum(r.n - sum(s.status.is_finished for s in r.seqs) for r in running)
    assert len(out.scheduled) <= width == sched.num_running_seqs <= cfg.max_num_seqs
    # Queues: disjoint, statuses right (every live sequence of a request shares
    # its queue), sorted by arrival, exactly the live requests.
    for queue, status in ((waiting, S.WAITING), (running, S.RUNNING), (swapped, S.SWAPPED)):
        assert all(s.status is status for r in queue for s in r.seqs
                   if not s.status.is_finished), f"{status} queue holds {queue}"
        assert all(len(r.seqs) in (1, r.n) for r in queue), "a group lost or gained sequences"
        arrivals = [r.arrival for r in queue]
        assert arrivals == sorted(arrivals), f"{status} queue out of arrival order"
    ids = [r.request_id for r in waiting + running + swapped]
    assert len(ids) == len(set(ids)), "a request sits in two queues"
    assert set(ids) == set(sched.requests), "queues and live requests differ"
    # Each scheduled sequence: running, once, its tokens contiguous and slotted.
    seen = set()
    for s in out.scheduled:
        seq = s.seq
        assert seq.seq_id not in seen and seq.status is S.RUNNING
        seen.add(seq.seq_id)
        assert s.start == seq.num_computed_tokens and s.num_new_tokens >= 1
        end = s.start + s.num_new_tokens
        assert end <= len(seq) and s.do_sample == (end == len(seq))
        # A decode computes just the token sampled last step; anything else is a prefill.
        assert s.is_prompt == (not (s.num_new_tokens == 1 and s.do_sample
                                    and len(seq) > seq.prompt_len))
        # Chunked prefill off: only a re-prefill too long for any step is split
        # (a group's re-prefills: together too long).
        req = s.request
        length = sum(map(len, req.live_seqs())) if req.is_group else len(seq)
        assert (cfg.enable_chunked_prefill or s.do_sample or
                length > max(cfg.max_num_batched_tokens, seq.prompt_len)), \
            "a chunk with chunked prefill off"
        table = sched.block_manager.get_block_table(seq)
        assert len(table) * bs >= end, f"seq {seq.seq_id}: {end} tokens, {len(table)} blocks"
        assert all(0 <= b < sched.cache_config.num_gpu_blocks for b in table)
    # Preemption, swapped-before-new, strict FCFS.
    now = {r.request_id: r.status for r in waiting + running + swapped}
    arrival = {r.request_id: r.arrival for r in waiting + running + swapped}
    for rid in out.preempted:
        assert before[rid] is S.RUNNING and now[rid] in (S.WAITING, S.SWAPPED)
    admitted = [rid for rid, st in before.items() if st is S.WAITING and now.get(rid) is S.RUNNING]
    swapped_in = [rid for rid, st in before.items()
                  if st is S.SWAPPED and now.get(rid) is S.RUNNING]
    if out.preempted:
        assert not admitted and not swapped_in, "admitted or swapped in after preempting"
        # Victims are the latest arrivals: every request still running came earlier.
        latest_kept = max((r.arrival for r in running), default=-1)
        assert latest_kept < min(arrival[rid] for rid in out.preempted), \
            "preempted a request while a later-arrived one kept running"
    if admitted:
        assert not swapped, "admitted a new prefill while a request is swapped out"
    if admitted and waiting:
        assert max(arrival[r] for r in admitted) < waiting[0].arrival, "FCFS broken"
    if swapped_in and swapped:
        assert max(arrival[r] for r in swapped_in) < swapped[0].arrival, "swap-in order"
    # A request runs whole: all its live sequences or none of them.
    for r in running:
        got = [s.seq_id in seen for s in r.seqs if not s.status.is_finished]
        assert all(got) or not any(got), f"{r.request_id}: part of a group scheduled"
    # Work-conserving: with budget left over every running request got tokens,
    # up to the first group wider than what was left; after it only requests
    # admitted or swapped in this step (with the budget left) may run.
    left = cfg.max_num_batched_tokens - out.num_batched_tokens
    if not out.preempted and left:
        idle = [r for r in running if not any(s.seq_id in seen for s in r.seqs)]
        if idle:
            first = running.index(idle[0])
            assert len(idle[0].live_seqs()) > left, "budget left but a running request idles"
            assert all(r in idle or before[r.request_id] is not S.RUNNING
                       for r in running[first:]), "a running request ran after an idle group"
    # Copy-on-write pairs: distinct fresh GPU destinations, sources still held.
    dsts = [d for _, d in out.blocks_to_copy]
    assert len(dsts) == len(set(dsts)), "two copies into one block"
    bm, num_gpu = sched.block_manager, sched.cache_config.num_gpu_blocks
    for src, dst in out.blocks_to_copy:
        assert src != dst and 0 <= src < num_gpu and 0 <= dst < num_gpu
        assert bm.ref_count(src) >= 1 and bm.ref_count(dst) >= 1, (src, dst)
        assert dst not in out.blocks_to_swap_in.values(), "a copy over a swapped-in block"
    # Ignored requests are exactly the infeasible ones.
    for req in out.ignored:
        assert req.status is S.FINISHED_IGNORED and req.error
        assert req.request_id in infeasible, f"feasible {req.request_id!r} ignored: {req.error}"


def drive(cfg: SchedulerConfig, cache: CacheConfig, arrivals: list[Arrival],
          aborts: dict[int, list[str]] | None = None, seed: int = 0,
          abort_in_flight: float = 0.0) -> DriveResult:
    """Run the stream to the drain, checking every step. aborts: step -> ids to
    abort before scheduling (an id not yet arrived is unknown: abort must say
    False). abort_in_flight: chance per step of aborting a scheduled request
    after the model ran and before update()."""
    aborts = aborts or {}
    rng = random.Random(seed)
    sched, kv = Scheduler(cfg, cache), SimKV(cache)
    res = DriveResult(bound=step_bound(arrivals, cfg, cache))
    infeasible = {a.request_id for a in arrivals if expected_infeasible(a, cfg, cache)}
    pending = sorted(arrivals, key=lambda a: a.step)
    last_arrival = max((a.step for a in arrivals), default=0)
    reqs, expected_kv = {}, {}
    step = 0
    while pending or sched.has_unfinished():
        while pending and pending[0].step <= step:
            a = pending.pop(0)
            req = reqs[a.request_id] = sched.add_request(
                a.request_id, list(a.prompt), a.max_tokens, eos_token_ids=a.eos, n=a.n)
            expected_kv[req.seq.seq_id] = kv_chain(a.prompt)
        for rid in aborts.get(step, ()):
            live = rid in sched.requests
            assert sched.abort(rid) == live
        before = _snapshot(sched)
        out = sched.schedule()
        check_step(sched, out, before, infeasible)
        for rid in out.preempted:
            if reqs[rid].is_group:
                mode = "swap" if reqs[rid].status is S.SWAPPED else "recompute"
                res.group_preemptions[mode] += 1
        res.max_batched_tokens = max(res.max_batched_tokens, out.num_batched_tokens)
        sampled = kv.run(sched, out, expected_kv)
        if out.scheduled and rng.random() < abort_in_flight:
            victim = rng.choice(out.scheduled)
            assert sched.abort(victim.request.request_id)
            if rng.random() < 0.5:
                sampled.pop(victim.seq.seq_id, None)
        for req in sched.update(out, sampled):
            assert req.is_finished
        for s in out.scheduled:
            if s.do_sample and s.seq.status is not S.FINISHED_ABORTED:
                chain = expected_kv[s.seq.seq_id]
                chain.append(kv_of(chain[-1], s.seq.token_ids[-1]))
                for child in s.request.seqs:            # forked by this step's update
                    if child.seq_id not in expected_kv:
                        expected_kv[child.seq_id] = kv_chain(child.token_ids)
        step += 1
        assert step - last_arrival <= res.bound, f"not drained within {res.bound} steps"
    res.steps, res.steps_after_last_arrival = step, max(0, step - last_arrival)
    bm = sched.block_manager
    assert bm.num_free_gpu_blocks == cache.num_gpu_blocks, "GPU blocks leaked"
    assert bm.num_free_cpu_blocks == cache.num_cpu_blocks, "CPU blocks leaked"
    assert not sched.waiting and not sched.running and not sched.swapped
    for rid, req in reqs.items():
        assert req.is_finished and len(req.seqs) in (1, req.n)
        res.outputs[rid] = [list(seq.output_token_ids) for seq in req.seqs]
        res.reasons[rid] = req.finish_reason
        res.seq_reasons[rid] = [seq.finish_reason for seq in req.seqs]
        if req.error:
            res.errors[rid] = req.error
    res.preemptions = dict(sched.num_preemptions)
    _check_outputs(arrivals, res, cfg)
    return res


def _check_outputs(arrivals: list[Arrival], res: DriveResult, cfg: SchedulerConfig) -> None:
    """Every sequence's output against the oracle; aborted ones: a prefix of it.
    A request of n sequences has all n once it sampled (each its own tokens),
    or only its parent (ignored, or aborted before its first sample)."""
    for a in arrivals:
        reason = res.reasons[a.request_id]
        assert reason is not None, f"{a.request_id} never finished"
        outputs, reasons = res.outputs[a.request_id], res.seq_reasons[a.request_id]
        if reason == "ignored":
            assert outputs == [[]] and reasons == ["ignored"]
            continue
        assert len(outputs) == a.n or (len(outputs) == 1 and not outputs[0]
                                       and reason == "abort"), (a, outputs)
        for index, (got, why) in enumerate(zip(outputs, reasons)):
            want, want_why = reference_generate(list(a.prompt), a.max_tokens, cfg.max_model_len,
                                                frozenset(a.eos), index)
            if why == "abort":
                assert got == want[:len(got)], f"{a.request_id}[{index}]: aborted output diverged"
            else:
                assert (got, why) == (want, want_why), \
                    f"{a.request_id}[{index}]: {got} {why} != {want} {want_why}"
