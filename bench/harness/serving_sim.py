"""Serving workloads run on the real (torch-free) scheduler with a simulated model clock.

Until the engine suites land, this is how the serving metrics are exercised: the
scheduler of engine/core decides every step, a step costs `base_s + per_token_s x
batched tokens` (times a seeded log-normal jitter, the machine's noise), and each
request's token times are read off that clock. The prefix cache lives in the
scheduler built per run, so it starts empty every round.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bench.fingerprint import token_digest
from bench.harness.serving import RequestTimes, arrival_times
from engine.core.config import CacheConfig, SchedulerConfig
from engine.core.scheduler import Scheduler

TOKEN = 7  # every sampled token: never a stop token, so each request runs to its length


@dataclass(frozen=True)
class Workload:
    name: str
    prompts: list[list[int]]
    output_lens: list[int]
    arrivals: list[float]


@dataclass(frozen=True)
class StepCost:
    base_s: float = 2e-3
    per_token_s: float = 2e-5
    jitter: float = 0.0          # log-normal sigma per step

    def __call__(self, tokens: int, gen: np.random.Generator) -> float:
        noise = math.exp(gen.normal(0.0, self.jitter)) if self.jitter else 1.0
        return (self.base_s + self.per_token_s * tokens) * noise


def random_workload(n: int, prompt_len: int, output_len: int, rate: float, burstiness: float = 1.0,
                    seed: int = 0, vocab: int = 32000) -> Workload:
    gen = np.random.default_rng(seed)
    prompts = [gen.integers(0, vocab, prompt_len).tolist() for _ in range(n)]
    return Workload("random", prompts, [output_len] * n, arrival_times(n, rate, burstiness, seed))


def prefix_sharing_workload(groups: int, per_group: int, system_len: int, question_len: int, output_len: int,
                            rate: float, burstiness: float = 1.0, seed: int = 0, vocab: int = 32000) -> Workload:
    """`groups` system prompts of `system_len` tokens, each followed by `per_group` questions;
    requests interleave the groups (as users of several apps arrive)."""
    gen = np.random.default_rng(seed)
    systems = [gen.integers(0, vocab, system_len).tolist() for _ in range(groups)]
    prompts = [systems[i % groups] + gen.integers(0, vocab, question_len).tolist()
               for i in range(groups * per_group)]
    n = len(prompts)
    return Workload("prefix-sharing", prompts, [output_len] * n, arrival_times(n, rate, burstiness, seed))


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
