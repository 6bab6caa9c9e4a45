"""Apply one step's sampled tokens to its sequences. No torch.

The scheduler's update() calls this, then frees the finished requests' blocks
and drops them from its queues.
"""
from __future__ import annotations

from engine.core.request import Request
from engine.core.scheduler_output import SchedulerOutput
from engine.core.sequence import SequenceStatus

_RUNNING = SequenceStatus.RUNNING


def apply_sampled(output: SchedulerOutput, sampled: dict[int, int]) -> list[Request]:
    """Advance num_computed_tokens of every scheduled sequence by its tokens,
    append the sampled token where it samples, and mark the requests that
    finish (FINISHED_STOPPED on a stop id, FINISHED_LENGTH at max_outputs).
    Sequences no longer running (aborted since schedule()) are skipped.
    Returns the finished requests. ValueError, before any change, unless
    `sampled` has a token for each live sampling sequence and no other."""
    if sampled.keys() != output.sample_seq_ids:
        _check_sampled(output, sampled)
    finished: list[Request] = []
    # The hot loop: hundreds of decodes a step.
    for seq, req, start in zip(output.decodes, output.decode_requests, output.decode_starts):
        if seq.status is not _RUNNING:
            continue
        seq.num_computed_tokens = start + 1
        token = sampled[seq.seq_id]
        seq.token_ids.append(token)                     # append_token_id, inlined
        outputs = seq.output_token_ids
        outputs.append(token)
        if token in req.stop_ids or len(outputs) >= req.max_outputs:
            finished.append(req)
    for s in output.prefills:
        seq = s.seq
        if seq.status is not _RUNNING:
            continue
        seq.num_computed_tokens = s.start + s.num_new_tokens
        if s.do_sample:
            token = sampled[seq.seq_id]
            seq.append_token_id(token)
            req = s.request
            if token in req.stop_ids or len(seq.output_token_ids) >= req.max_outputs:
                finished.append(req)
    for req in finished:
        seq = req.seq
        seq.status = (SequenceStatus.FINISHED_STOPPED if seq.token_ids[-1] in req.stop_ids
                      else SequenceStatus.FINISHED_LENGTH)
    return finished


def _check_sampled(output: SchedulerOutput, sampled: dict[int, int]) -> None:
    live = {s.seq.seq_id for s in output.scheduled
            if s.do_sample and s.seq.status is _RUNNING}
    missing = sorted(live - sampled.keys())
    extra = sorted(sampled.keys() - output.sample_seq_ids)
    if missing or extra:
        raise ValueError(f"sampled: no token for seq_ids {missing}; tokens for seq_ids "
                         f"{extra} that did not sample this step")
