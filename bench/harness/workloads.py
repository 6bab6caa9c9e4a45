"""The serving workloads: random prompts, or groups sharing a long system prompt, with
seeded gamma arrivals (serving.arrival_times). Run by serving_sim.py on the scheduler
with a simulated clock and by serving_engine.py on the real engine."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bench.harness.serving import arrival_times


@dataclass(frozen=True)
class Workload:
    name: str
    prompts: list[list[int]]
    output_lens: list[int]
    arrivals: list[float]
    spec: dict = field(default_factory=dict)   # the generator's arguments: what a fingerprint records


def random_workload(n: int, prompt_len: int, output_len: int, rate: float, burstiness: float = 1.0,
                    seed: int = 0, vocab: int = 32000) -> Workload:
    gen = np.random.default_rng(seed)
    prompts = [gen.integers(0, vocab, prompt_len).tolist() for _ in range(n)]
    spec = dict(n=n, prompt_len=prompt_len, output_len=output_len, rate=rate, burstiness=burstiness, seed=seed,
                vocab=vocab)
    return Workload("random", prompts, [output_len] * n, arrival_times(n, rate, burstiness, seed), spec)


def prefix_sharing_workload(groups: int, per_group: int, system_len: int, question_len: int, output_len: int,
                            rate: float, burstiness: float = 1.0, seed: int = 0, vocab: int = 32000) -> Workload:
    """`groups` system prompts of `system_len` tokens, each followed by `per_group` questions;
    requests interleave the groups (as users of several apps arrive)."""
    gen = np.random.default_rng(seed)
    systems = [gen.integers(0, vocab, system_len).tolist() for _ in range(groups)]
    prompts = [systems[i % groups] + gen.integers(0, vocab, question_len).tolist()
               for i in range(groups * per_group)]
    n = len(prompts)
    spec = dict(groups=groups, per_group=per_group, system_len=system_len, question_len=question_len,
                output_len=output_len, rate=rate, burstiness=burstiness, seed=seed, vocab=vocab)
    return Workload("prefix-sharing", prompts, [output_len] * n, arrival_times(n, rate, burstiness, seed), spec)
