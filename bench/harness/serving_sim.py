"""Serving workloads run on the real (torch-free) scheduler with a simulated model clock.

The torch-free check of the serving metrics (serving_engine.py runs the same
workloads on the real engine): the scheduler of engine/core decides every step, a
step costs `base_s + per_token_s x batched tokens` (times a seeded log-normal
jitter, the machine's noise), and each request's token times are read off that clock. The prefix cache lives in the
scheduler built per run, so it starts empty every round.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bench.fingerprint import token_digest
from bench.harness.serving import RequestTimes
from bench.harness.workloads import Workload
from engine.core.config import CacheConfig, SchedulerConfig
from engine.core.scheduler import Scheduler

TOKEN = 7  # every sampled token: never a stop token, so each request runs to its length


@dataclass(frozen=True)
class StepCost:
    base_s: float = 2e-3
    per_token_s: float = 2e-5
    jitter: float = 0.0          # log-normal sigma per step

    def __call__(self, tokens: int, gen: np.random.Generator) -> float:
        noise = math.exp(gen.normal(0.0, self.jitter)) if self.jitter else 1.0
        return (self.base_s + self.per_token_s * tokens) * noise


def simulate(w: Workload, cost: StepCost, seed: int = 0, block_size: int = 16, num_gpu_blocks: int = 4096,
             prefix_caching: bool = True, max_num_seqs: int = 64,
             max_num_batched_tokens: int = 4096) -> tuple[list[RequestTimes], str]:
    """Per-request times of one run, and a digest of the tokens every request produced."""
    longest = max(len(p) + o for p, o in zip(w.prompts, w.output_lens))
    sched = Scheduler(SchedulerConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                                      max_model_len=longest),
                      CacheConfig(block_size=block_size, num_gpu_blocks=num_gpu_blocks,
                                  enable_prefix_caching=prefix_caching))
    gen = np.random.default_rng(seed)
    order = sorted(range(len(w.prompts)), key=lambda i: w.arrivals[i])
    times = {f"r{i}": RequestTimes(f"r{i}", w.arrivals[i]) for i in order}
    requests = {}
    clock, nxt = 0.0, 0
    while nxt < len(order) or sched.has_unfinished():
        if not sched.has_unfinished() and clock < w.arrivals[order[nxt]]:
            clock = w.arrivals[order[nxt]]           # idle until the next arrival
        while nxt < len(order) and w.arrivals[order[nxt]] <= clock:
            i = order[nxt]
            requests[f"r{i}"] = sched.add_request(f"r{i}", list(w.prompts[i]), w.output_lens[i])
            nxt += 1
        out = sched.schedule()
        clock += cost(out.num_batched_tokens, gen)
        sampled = {seq_id: TOKEN for seq_id in out.sample_seq_ids}
        for s in out.scheduled:
            if s.seq.seq_id in sampled:
                times[s.request.request_id].token_times.append(clock)
        sched.update(out, sampled)
    digest = token_digest(requests[r].seq.output_token_ids for r in sorted(requests))
    return list(times.values()), digest
