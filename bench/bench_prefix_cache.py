"""Prefix-cache lookup cost: can_allocate + allocate + free of a 2,048-token
prompt whose blocks are all cached (block 16: 127 reusable blocks, the last one
computes the final token). Figure: median microseconds per round. BENCH_QUICK=1
(the CI gate) times fewer rounds."""
from __future__ import annotations

import os
import random

from bench.fingerprint import fingerprint
from engine.core.block.block_manager import AllocStatus, BlockManager
from engine.core.sequence import Sequence

PROMPT = 2048
BLOCK = 16
ROUNDS = 300
QUICK_ROUNDS = 100


def test_bench_prefix_lookup_2048(benchmark) -> None:
    bm = BlockManager(BLOCK, num_gpu_blocks=4 * PROMPT // BLOCK, num_cpu_blocks=0)
    rng = random.Random(0)
    prompt = [rng.randrange(32000) for _ in range(PROMPT)]
    warm = Sequence(0, prompt)
    bm.allocate(warm)
    bm.free(warm)                       # every full block now cached, evictable
    ids = iter(range(1, 10**9))

    def lookup() -> int:
        seq = Sequence(next(ids), prompt)
        assert bm.can_allocate(seq) is AllocStatus.OK
        bm.allocate(seq)
        cached = bm.get_num_cached_tokens(seq)
        bm.free(seq)
        return cached

    rounds = QUICK_ROUNDS if os.environ.get("BENCH_QUICK") == "1" else ROUNDS
    cached = benchmark.pedantic(lookup, rounds=rounds, warmup_rounds=20, iterations=1)
    assert cached == (PROMPT - 1) // BLOCK * BLOCK
    assert bm.num_free_gpu_blocks == bm.num_total_gpu_blocks
    median_us = benchmark.stats.stats.median * 1e6
    benchmark.extra_info.update({"prompt_tokens": PROMPT, "block_size": BLOCK,
                                 "cached_tokens": cached, "lookup_us": round(median_us, 1),
                                 "fingerprint": fingerprint(prompt_tokens=PROMPT, block_size=BLOCK, rounds=rounds,
                                                            warmup=20, seed=0, cached_tokens=cached)})
    print(f"\nprefix-cache lookup, {PROMPT} cached tokens: {median_us:.0f} us median "
          f"(can_allocate + allocate + free)")
