"""Which requests can never run to their end, and why. No torch.

A request is reported FINISHED_IGNORED instead of waiting forever (vLLM #35541
hung there) when its prompt is longer than max_model_len; when, with chunked
prefill off, its prompt is longer than max_num_batched_tokens; or when its
longest sequence W = min(prompt + max_tokens - 1, max_model_len) -- what its
blocks may hold, and what a recompute re-prefills -- needs more blocks than
can_allocate ever grants (NEVER). So every admitted request fits alone on an
empty GPU, which is what lets the scheduler bound its progress.
"""
from __future__ import annotations

from engine.core.block.block_manager import AllocStatus, BlockManager
from engine.core.config import CacheConfig, SchedulerConfig
from engine.core.kv_memory import cdiv
from engine.core.request import Request
from engine.core.sequence import Sequence


def largest_allocatable(bm: BlockManager, cache: CacheConfig, max_model_len: int) -> int:
    """Most tokens one sequence may hold: whole blocks that can_allocate does not
    call NEVER (a bisection over probes whose ids hit no prefix-cache entry)."""
    bs = cache.block_size
    lo, hi = 0, min(cache.num_gpu_blocks, cdiv(max_model_len, bs))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if bm.can_allocate(Sequence(-1, [-1] * (mid * bs))) is AllocStatus.NEVER:
            hi = mid - 1
        else:
            lo = mid
    return lo * bs


def infeasibility(req: Request, cfg: SchedulerConfig, cache: CacheConfig,
                  pool_tokens: int) -> str | None:
    """Why `req` can never finish under these configs, or None if it can.
    pool_tokens: largest_allocatable() of the scheduler's block manager."""
    plen = req.seq.prompt_len
    if plen > cfg.max_model_len:
        return f"prompt has {plen} tokens, more than max_model_len={cfg.max_model_len}"
    if not cfg.enable_chunked_prefill and plen > cfg.max_num_batched_tokens:
        return (f"prompt has {plen} tokens, more than max_num_batched_tokens="
                f"{cfg.max_num_batched_tokens}, with chunked prefill off")
    worst = min(plen + req.max_tokens - 1, cfg.max_model_len)
    if worst > pool_tokens:
        bs = cache.block_size
        return (f"a sequence of up to {worst} tokens needs {cdiv(worst, bs)} blocks of "
                f"{bs} tokens, more than the GPU pool can ever hold "
                f"(num_gpu_blocks={cache.num_gpu_blocks}, watermark={cache.watermark})")
    return None
