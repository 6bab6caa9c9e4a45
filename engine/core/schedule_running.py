"""The running queue's share of one step: decodes, prefill chunks, groups. No torch.

Running requests are taken in arrival order: a decode (1 token), the next
prefill chunk (min(rest, budget left)), or a parallel-sampling group whole
(every live sequence, or none: see engine/core/group_plan.py).

Slots. The block manager is shown only tokens that have KV by the end of the
step being scheduled (the sequence, or a prefix copy of it for a chunk), so every
scheduled token has a slot before the step runs and every block it registers in
the prefix cache is written by then (it registers blocks as they fill, before
their KV exists). A decode: update() appends the sampled token at position
p = len - 1 without a slot; the next schedule() computes p, calling append_slots
first -- so a block is taken only by the step that writes it, and running out
there is what triggers preemption (the scheduler's make_room). The block manager
decides how cheap that call is (one fast path, there: a slot inside a last block
the sequence owns alone costs a few comparisons).
"""
from __future__ import annotations

import operator
from collections.abc import Callable

from engine.core.block.block_manager import BlockManager
from engine.core.config import SchedulerConfig
from engine.core.group_plan import prefix_view, split_budget
from engine.core.request import Request
from engine.core.scheduler_output import SchedulerOutput
from engine.core.sequence import Sequence

_seq_id = operator.attrgetter("seq_id")
_computed = operator.attrgetter("num_computed_tokens")
# make_room(request, views, out): preempt the latest running requests until the
# views (of request) can get their slots; False when the request itself went.
MakeRoom = Callable[[Request, list[Sequence], SchedulerOutput], bool]


def schedule_running(running: list[Request], out: SchedulerOutput, budget: int,
                     bm: BlockManager, cfg: SchedulerConfig, make_room: MakeRoom) -> int:
    """Add the running requests' work to `out` under `budget` tokens; returns the
    budget left. Stops at a request that preempted itself or that the budget
    left cannot take. A run of decodes is planned in a tight loop and gets its
    slots from the block manager in one batch (append_slots_batch), before
    anything else asks it for blocks, so blocks are still taken in arrival
    order; a prefill chunk or a group gets its slots alone. `running` is the
    scheduler's own queue: make_room pops preempted requests off its end."""
    decodes, copies_out = out.decodes, out.blocks_to_copy
    i = 0                                           # running[i] is next
    while True:
        first, planned = i, len(decodes)
        for req in running[i:i + budget]:           # the hot loop: 1 token each
            seq = req.seq
            if (req.is_group or len(seq.token_ids) - seq.num_computed_tokens != 1
                    or not seq.output_token_ids):
                break                               # not a lone decode
            decodes.append(seq)
        got = bm.append_slots_batch(decodes, planned, copies_out)
        # Bookkeeping of the decodes that got slots, in C loops.
        out.decode_requests.extend(running[first:first + got - planned])
        out.decode_starts.extend(map(_computed, decodes[planned:got]))
        out.sample_seq_ids.update(map(_seq_id, decodes[planned:got]))
        budget -= got - planned
        i = first + got - planned
        if got < len(decodes):                      # running[i] found no room
            del decodes[got:]
            req = running[i]
            if not make_room(req, [req.seq], out):
                return budget                       # req preempted itself
            copies_out.extend(bm.append_slots(req.seq))
            out.add(req, req.seq, req.seq.num_computed_tokens, 1, 1)
            budget -= 1
            i += 1
            continue
        if i >= len(running) or not budget:
            return budget
        req = running[i]                            # a prefill chunk, or a group
        seqs = req.live_seqs() if req.is_group else [req.seq]
        starts = [seq.num_computed_tokens for seq in seqs]
        remaining = [len(seq.token_ids) - c for seq, c in zip(seqs, starts)]
        tokens = split_budget(remaining, budget, True, cfg)
        if tokens is None:
            return budget                           # a group wider than the budget left
        views = [prefix_view(seq, c + n) for seq, c, n in zip(seqs, starts, tokens)]
        if bm.append_cost(views) > bm.num_free_gpu_blocks and not make_room(req, views, out):
            return budget                           # req preempted itself
        for seq, view, c, n, r in zip(seqs, views, starts, tokens, remaining):
            copies_out.extend(bm.append_slots(view))
            out.add(req, seq, c, n, r)
            budget -= n
        i += 1
