"""Preemption: what happens to a running request that must give up its GPU blocks. No torch.

When a running request's tokens get no slot, the scheduler preempts the
latest-arrived running request (the needy one itself if it is the latest) and
asks this module what becomes of it:
  - "swap": swap_out to CPU (SWAPPED); it resumes with its KV intact;
  - "recompute" (or swap without CPU room): blocks freed, num_computed_tokens
    reset, back to waiting; it re-prefills prompt + outputs later, prefix-cache
    hits counting as computed.
A request with several sequences (parallel sampling) goes as a whole: all its
live sequences are swapped out together when the CPU holds them all (shared
blocks copied once), else all are freed, each to re-prefill its own tokens
when the group is admitted again.
The scheduler owns its queues: it puts the request back into the queue this
returns, at its arrival position (the front, in practice), so FCFS holds.
"""
from __future__ import annotations

from engine.core.block.block_manager import BlockManager
from engine.core.request import Request
from engine.core.scheduler_output import SchedulerOutput
from engine.core.sequence import SequenceStatus


class Preemptor:
    """Frees a running request's GPU blocks by the configured mode. Holds no queue."""

    def __init__(self, block_manager: BlockManager, preemption_mode: str) -> None:
        self.block_manager = block_manager
        self.mode = preemption_mode

    def preempt(self, req: Request, out: SchedulerOutput) -> str:
        """Swap `req` out, or free it for recompute (it must be off the running
        queue); records the swap map in `out`. Returns the mode used."""
        seqs, bm = req.live_seqs(), self.block_manager
        out.preempted.append(req.request_id)
        if self.mode == "swap" and bm.can_swap_out_all(seqs):
            for seq in seqs:
                out.blocks_to_swap_out.update(bm.swap_out(seq))
                seq.status = SequenceStatus.SWAPPED
            return "swap"
        for seq in seqs:
            bm.free(seq)
            seq.num_computed_tokens = 0
            seq.status = SequenceStatus.WAITING
        return "recompute"
