"""Which requests can never run to their end, and why. No torch.

A request is reported FINISHED_IGNORED instead of waiting forever (vLLM #35541
hung there) when its prompt is longer than max_model_len; when, with chunked
prefill off, its prompt is longer than max_num_batched_tokens; when it asks for
more sequences (n) than max_num_seqs or than max_num_batched_tokens (its
sequences run in the same steps, one token each at least); or when n sequences
of its longest length W = min(prompt + max_tokens - 1, max_model_len) -- what
each one's blocks may hold, and what a recompute re-prefills -- need more blocks
than can_allocate ever grants one sequence (NEVER). n x blocks(W) is the worst
case of a group: after a recompute its sequences share no block. So every
admitted request fits alone on an empty GPU, which is what lets the scheduler
bound its progress.
"""
from __future__ import annotations

from engine.core.config import CacheConfig, SchedulerConfig
from engine.core.kv_memory import cdiv
from engine.core.request import Request


def infeasibility(req: Request, cfg: SchedulerConfig, cache: CacheConfig,
                  pool_blocks: int) -> str | None:
    """Why `req` can never finish under these configs, or None if it can.
    pool_blocks: BlockManager.max_allocatable_blocks of the scheduler's."""
    plen, n = req.seq.prompt_len, req.n
    if n > cfg.max_num_seqs:
        return f"n={n} sequences, more than max_num_seqs={cfg.max_num_seqs}"
    if n > cfg.max_num_batched_tokens:
        return (f"n={n} sequences, more than max_num_batched_tokens="
                f"{cfg.max_num_batched_tokens} (they decode in the same steps)")
    if plen > cfg.max_model_len:
        return f"prompt has {plen} tokens, more than max_model_len={cfg.max_model_len}"
    if not cfg.enable_chunked_prefill and plen > cfg.max_num_batched_tokens:
        return (f"prompt has {plen} tokens, more than max_num_batched_tokens="
                f"{cfg.max_num_batched_tokens}, with chunked prefill off")
    worst, bs = min(plen + req.max_tokens - 1, cfg.max_model_len), cache.block_size
    if n * cdiv(worst, bs) > pool_blocks:
        what = (f"a sequence of up to {worst} tokens needs" if n == 1 else
                f"{n} sequences of up to {worst} tokens need {n} x")
        return (f"{what} {cdiv(worst, bs)} blocks of {bs} tokens, more than the GPU pool "
                f"can ever hold (num_gpu_blocks={cache.num_gpu_blocks}, "
                f"watermark={cache.watermark})")
    return None
