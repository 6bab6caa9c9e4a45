"""Scheduler step cost: one schedule() + update() round over N decoding sequences.

Block size 16, prefix caching on, a pool large enough that nothing is
preempted, max_tokens huge so every sequence keeps running. Prompt lengths are
staggered over a block so that, as in a real mix, 1/16 of the sequences cross a
block boundary (and so call the block manager) each step rather than all at once.
Goal (issue 2, section 5): <= 200 us per step at 256 running sequences on the
development CPUs. Figures: wall median (pytest-benchmark's timer) and process
CPU-time median (less disturbed by other processes on a shared machine). The
mean carries the odd full garbage collection of the whole process (some 200 ms
with torch imported); an engine avoids it with gc.freeze() after start-up.
The gate judges the wall samples (on the loaded development machine CPU time
moved between rounds as much as wall time did: bench/README.md, calibration).
BENCH_QUICK=1 (the CI gate) times fewer rounds; the fingerprint records how many.
"""
from __future__ import annotations

import os
import random
import statistics
import time

import pytest

from bench.fingerprint import fingerprint, token_digest
from engine.core.config import CacheConfig, SchedulerConfig
from engine.core.scheduler import Scheduler

GOAL_US = 200.0
BLOCK = 16
PROMPT = 64
WARMUP = 50
ROUNDS = {256: 2000, 1024: 500}
QUICK_ROUNDS = {256: 400, 1024: 100}


def _running_scheduler(n: int, steps: int) -> tuple[Scheduler, dict[int, int]]:
    """n requests, all prefilled and decoding, with room for `steps` more tokens each."""
    max_len = PROMPT + BLOCK + steps + 1
    cfg = SchedulerConfig(max_num_seqs=n, max_num_batched_tokens=n * (PROMPT + BLOCK),
                          max_model_len=max_len)
    cache = CacheConfig(block_size=BLOCK, num_gpu_blocks=n * -(-max_len // BLOCK) + BLOCK,
                        enable_prefix_caching=True)
    sched = Scheduler(cfg, cache)
    rng = random.Random(0)
    for i in range(n):
        prompt = [rng.randrange(32000) for _ in range(PROMPT + i % BLOCK)]
        sched.add_request(f"r{i}", prompt, max_tokens=10**9)
    out = sched.schedule()
    assert len(out.prefills) == n, "every prompt is admitted in the first step"
    sampled = {seq_id: 7 for seq_id in out.sample_seq_ids}  # 7: no stop token
    sched.update(out, sampled)
    return sched, sampled


@pytest.mark.parametrize("num_seqs", [256, 1024])
def test_schedule_update_round(benchmark, num_seqs: int) -> None:
    rounds = (QUICK_ROUNDS if os.environ.get("BENCH_QUICK") == "1" else ROUNDS)[num_seqs]
    sched, sampled = _running_scheduler(num_seqs, WARMUP + rounds)
    cpu: list[float] = []
    clock = time.process_time

    def one_round() -> None:
        t = clock()
        sched.update(sched.schedule(), sampled)
        cpu.append(clock() - t)

    benchmark.pedantic(one_round, rounds=rounds, warmup_rounds=WARMUP, iterations=1)
    # The workload was what it claims: all still running, one token per round each.
    assert len(sched.running) == num_seqs and not sched.waiting and not sched.swapped
    assert all(len(r.output_token_ids) == 1 + WARMUP + rounds for r in sched.running)
    assert sum(sched.num_preemptions.values()) == 0

    wall_us = benchmark.stats.stats.median * 1e6
    cpu_us = statistics.median(cpu[WARMUP:]) * 1e6
    benchmark.extra_info.update({
        "num_seqs": num_seqs, "block_size": BLOCK, "prefix_caching": True,
        "per_step_us": round(wall_us, 1), "per_step_cpu_us": round(cpu_us, 1),
        "per_step_mean_us": round(benchmark.stats.stats.mean * 1e6, 1),
        "per_seq_us": round(wall_us / num_seqs, 3), "goal_us": GOAL_US,
        "ratio_to_goal": round(wall_us / GOAL_US, 3),
        "cpu_ratio_to_goal": round(cpu_us / GOAL_US, 3),
        "fingerprint": fingerprint(num_seqs=num_seqs, block_size=BLOCK, prompt=PROMPT, prefix_caching=True,
                                   warmup=WARMUP, rounds=rounds, seed=0,
                                   outputs=token_digest(r.output_token_ids for r in sched.running)),
    })
    print(f"\nscheduler step, {num_seqs} running: {wall_us:.0f} us wall median "
          f"({wall_us / GOAL_US:.2f}x the {GOAL_US:.0f} us goal), {cpu_us:.0f} us CPU median "
          f"({cpu_us / GOAL_US:.2f}x), {wall_us / num_seqs:.2f} us per sequence")
