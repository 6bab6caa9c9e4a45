"""Preemption: freeing GPU blocks for a running request that got no slot. No torch.

When a running request's tokens get no slot, the latest-arrived running request
is preempted (the needy one itself if it is the latest):
  - "swap": swap_out to CPU (SWAPPED); it resumes with its KV intact;
  - "recompute" (or swap without CPU room): blocks freed, num_computed_tokens
    reset, back to waiting; it re-prefills prompt + outputs later, prefix-cache
    hits counting as computed.
Preempted requests rejoin their queue at their arrival position (the front, in
practice), so FCFS holds across them.
"""
from __future__ import annotations

from collections import deque

from engine.core.block.block_manager import BlockManager, NoFreeBlocksError
from engine.core.request import Request
from engine.core.scheduler_output import SchedulerOutput
from engine.core.sequence import Sequence, SequenceStatus


def _insert_by_arrival(queue: deque[Request], req: Request) -> None:
    i = 0
    while i < len(queue) and queue[i].arrival < req.arrival:
        i += 1
    queue.insert(i, req)


class Preemptor:
    """Preempts running requests into the scheduler's waiting / swapped queues
    (the deques themselves, shared) and counts them in `counts` by mode."""

    def __init__(self, block_manager: BlockManager, preemption_mode: str,
                 waiting: deque[Request], swapped: deque[Request],
                 counts: dict[str, int]) -> None:
        self.block_manager = block_manager
        self.mode = preemption_mode
        self.waiting = waiting
        self.swapped = swapped
        self.counts = counts

    def make_room(self, running: list[Request], req: Request, view: Sequence,
                  out: SchedulerOutput) -> list[tuple[int, int]] | None:
        """Preempt the latest of `running` (sorted by arrival) until `view` gets
        its slots; returns append_slots' copies, or None when `req` itself had to go."""
        while True:
            victim = running.pop()                      # the latest arrival
            self.preempt(victim, out)
            if victim is req:
                return None
            try:
                return self.block_manager.append_slots(view)
            except NoFreeBlocksError:
                continue

    def preempt(self, req: Request, out: SchedulerOutput) -> None:
        """Swap `req` out, or free it for recompute; it must be off `running`."""
        seq, bm = req.seq, self.block_manager
        out.preempted.append(req.request_id)
        if self.mode == "swap" and bm.can_swap_out(seq):
            out.blocks_to_swap_out.update(bm.swap_out(seq))
            seq.status = SequenceStatus.SWAPPED
            _insert_by_arrival(self.swapped, req)
            self.counts["swap"] += 1
        else:
            bm.free(seq)
            seq.num_computed_tokens = 0
            seq.status = SequenceStatus.WAITING
            _insert_by_arrival(self.waiting, req)
            self.counts["recompute"] += 1
