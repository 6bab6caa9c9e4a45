"""Apply one step's sampled tokens to its sequences. No torch.

The scheduler's update() calls this, then frees the finished sequences' blocks
and drops finished requests from its queues.
"""
from __future__ import annotations

from collections.abc import Callable

from engine.core.request import Request
from engine.core.scheduler_output import SchedulerOutput
from engine.core.sequence import Sequence, SequenceStatus

_RUNNING = SequenceStatus.RUNNING
# fork(request, parent, tokens): the n - 1 children of a first sample, each with
# its token appended; the parent's (the first) token is appended by the caller.
Fork = Callable[[Request, Sequence, list[int]], list[Sequence]]


def apply_sampled(output: SchedulerOutput, sampled: dict[int, int | list[int]],
                  fork: Fork) -> list[tuple[Request, Sequence]]:
    """Advance num_computed_tokens of every scheduled sequence by its tokens,
    append the sampled token where it samples (n tokens, forking n - 1 children,
    where output.num_samples says), and mark the sequences that finish
    (FINISHED_STOPPED on a stop id, FINISHED_LENGTH at max_outputs). Sequences no
    longer running (aborted since schedule()) are skipped. Returns the finished
    (request, sequence) pairs. ValueError, before any change, unless `sampled` has
    a token (a list of num_samples tokens) for each live sampling sequence and no other."""
    if sampled.keys() != output.sample_seq_ids:
        _check_keys(output, sampled)
    if output.num_samples:
        _check_lists(output, sampled)
    finished: list[tuple[Request, Sequence]] = []
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
            finished.append((req, seq))
    for s in output.prefills:
        seq = s.seq
        if seq.status is not _RUNNING:
            continue
        seq.num_computed_tokens = s.start + s.num_new_tokens
        if not s.do_sample:
            continue
        req, token = s.request, sampled[seq.seq_id]
        if seq.seq_id in output.num_samples:
            children = fork(req, seq, token[1:])
            seq.append_token_id(token[0])
            samples = [seq, *children]
        else:
            seq.append_token_id(token)
            samples = [seq]
        for x in samples:
            if x.token_ids[-1] in req.stop_ids or len(x.output_token_ids) >= req.max_outputs:
                finished.append((req, x))
    for req, seq in finished:
        seq.status = (SequenceStatus.FINISHED_STOPPED if seq.token_ids[-1] in req.stop_ids
                      else SequenceStatus.FINISHED_LENGTH)
    return finished


def _check_keys(output: SchedulerOutput, sampled: dict) -> None:
    live = {s.seq.seq_id for s in output.scheduled
            if s.do_sample and s.seq.status is _RUNNING}
    missing = sorted(live - sampled.keys())
    extra = sorted(sampled.keys() - output.sample_seq_ids)
    if missing or extra:
        raise ValueError(f"sampled: no token for seq_ids {missing}; tokens for seq_ids "
                         f"{extra} that did not sample this step")


def _check_lists(output: SchedulerOutput, sampled: dict) -> None:
    for seq_id, n in output.num_samples.items():
        tokens = sampled.get(seq_id)
        if tokens is not None and (not isinstance(tokens, (list, tuple)) or len(tokens) != n):
            raise ValueError(f"sampled[{seq_id}]: the first sample of a request with n={n} "
                             f"wants a list of {n} token ids, got {tokens!r}")
