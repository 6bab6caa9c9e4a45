"""Starting queued requests in one step: swap-in of swapped ones, admission of
waiting ones. No torch.

Each queue is taken in arrival order, a request whole (all its live sequences),
while it fits: max_num_seqs, the token budget (engine/core/group_plan.py) and
the GPU blocks. The first request that does not fit stops the queue, so no
later one jumps it (first-come-first-served). Admission allocate()s the first
chunk (prefix-cache hits count as computed); a swapped request comes back with
its progress and gets its next chunk's slots with append_slots. Swap-in keeps
the watermark free, as admission does (BlockManager.can_allocate_all).
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable

from engine.core.block.block_manager import AllocStatus, BlockManager
from engine.core.config import SchedulerConfig
from engine.core.group_plan import prefix_view, split_budget
from engine.core.request import Request
from engine.core.scheduler_output import SchedulerOutput
from engine.core.sequence import SequenceStatus

_RUNNING = SequenceStatus.RUNNING
# ignore(request, error): the scheduler finishes it as FINISHED_IGNORED.
Ignore = Callable[[Request, str], None]


def schedule_queued(queue: deque[Request], swap_in: bool, out: SchedulerOutput, budget: int,
                    seats: int, bm: BlockManager, cfg: SchedulerConfig,
                    ignore: Ignore) -> tuple[int, list[Request]]:
    """Swap in (swap_in: queue is the swapped queue) or admit (the waiting queue)
    requests from the front of `queue` into `out`, whole, while they fit `budget`
    tokens and `seats` sequences (max_num_seqs less those running). Each one
    started is popped off the queue and its sequences set RUNNING. Returns the
    budget left and the requests started, in order: the caller puts them on its
    running queue."""
    started: list[Request] = []
    while queue and budget:
        req = queue[0]
        if req.width > seats:
            break
        seqs = req.live_seqs()
        # Prefix-cache hits count as computed; a swapped sequence keeps its progress.
        starts = [seq.num_computed_tokens if swap_in else bm.get_num_cached_tokens(seq)
                  for seq in seqs]
        remaining = [len(seq.token_ids) - c for seq, c in zip(seqs, starts)]
        tokens = split_budget(remaining, budget, False, cfg)
        if tokens is None:
            break
        views = [prefix_view(seq, c + n) for seq, c, n in zip(seqs, starts, tokens)]
        if swap_in:
            need = bm.swap_in_cost(seqs)
            free = bm.num_free_gpu_blocks
            if free - need < bm.watermark_blocks or free < need + bm.append_cost(views):
                break
        else:
            status = bm.can_allocate_all(views)
            if status is AllocStatus.LATER:
                break
            if status is AllocStatus.NEVER:         # admission.py rules this out
                queue.popleft()
                ignore(req, f"needs {sum(map(len, views))} tokens of KV, "
                            f"more than the GPU pool can ever hold")
                continue
        queue.popleft()
        if swap_in:     # all first: a block they share comes back once, still shared
            for seq in seqs:
                out.blocks_to_swap_in.update(bm.swap_in(seq))
            for view in views:
                out.blocks_to_copy.extend(bm.append_slots(view))
        else:
            bm.allocate_all(views)
            if [bm.get_num_cached_tokens(seq) for seq in seqs] != starts:
                raise RuntimeError(f"prefix hits of {req.request_id!r} changed between "
                                   f"lookup and allocate")
            for seq, c in zip(seqs, starts):
                seq.num_computed_tokens = c
        for seq, c, view in zip(seqs, starts, views):
            seq.status = _RUNNING
            out.add(req, seq, c, len(view.token_ids) - c, len(seq.token_ids) - c)
            budget -= len(view.token_ids) - c
        started.append(req)
        seats -= req.width
    return budget, started
