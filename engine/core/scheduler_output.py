"""What one scheduler step hands the model runner. Plain data, no torch."""
from __future__ import annotations

from dataclasses import dataclass, field

from engine.core.request import Request
from engine.core.sequence import Sequence


class ScheduledSequence:
    """One sequence's share of a step: compute tokens [start, start + num_new_tokens).

    start: seq.num_computed_tokens before this step (prefix-cache hits included).
    is_prompt: a prompt (or re-prefill after recompute) chunk; False for a decode.
    do_sample: the chunk reaches the end of the known tokens, so the runner
        samples one token for this sequence and passes it to update().
    """

    __slots__ = ("request", "seq", "start", "num_new_tokens", "is_prompt", "do_sample")

    def __init__(self, request: Request, seq: Sequence, start: int, num_new_tokens: int,
                 is_prompt: bool, do_sample: bool) -> None:
        self.request = request
        self.seq = seq
        self.start = start
        self.num_new_tokens = num_new_tokens
        self.is_prompt = is_prompt
        self.do_sample = do_sample

    @property
    def seq_id(self) -> int:
        return self.seq.seq_id

    def __repr__(self) -> str:
        kind = "prompt" if self.is_prompt else "decode"
        return (f"ScheduledSequence({self.request.request_id!r}, {kind}, start={self.start}, "
                f"n={self.num_new_tokens}, sample={self.do_sample})")


@dataclass
class SchedulerOutput:
    """One step. Decodes are kept as flat lists (the hot path: hundreds per
    step, no object each); prompt and re-prefill chunks as ScheduledSequence.

    decodes[i]: a sequence whose last (sampled) token is computed this step, at
        position decode_starts[i] (its num_computed_tokens before the step), of
        the request decode_requests[i].
    prefills: prompt / re-prefill chunks, in scheduling order.
    scheduled: all of them as ScheduledSequence, decodes first (built on demand).
    sample_seq_ids: seq ids that sample a token this step; update() wants one each.
    num_samples: seq_id -> n for the first sample of a request with n > 1
        sequences (its prompt's last chunk): the sampler draws n tokens there and
        update() takes them as a list; everywhere else one token (samples_for).

    The runner applies blocks_to_swap_out, then blocks_to_swap_in, then
    blocks_to_copy (copy-on-write (src, dst) GPU pairs), and only then runs the
    model: a block freed by a swap-out may be handed to another sequence in the
    same step, so its old contents must leave first.
    ignored: requests finished as FINISHED_IGNORED this step; each has .error.
    preempted: request ids preempted this step (by either mode).
    """

    decodes: list[Sequence] = field(default_factory=list)
    decode_requests: list[Request] = field(default_factory=list)
    decode_starts: list[int] = field(default_factory=list)
    prefills: list[ScheduledSequence] = field(default_factory=list)
    num_batched_tokens: int = 0
    num_prefill_tokens: int = 0
    blocks_to_swap_in: dict[int, int] = field(default_factory=dict)
    blocks_to_swap_out: dict[int, int] = field(default_factory=dict)
    blocks_to_copy: list[tuple[int, int]] = field(default_factory=list)
    sample_seq_ids: set[int] = field(default_factory=set)
    num_samples: dict[int, int] = field(default_factory=dict)
    ignored: list[Request] = field(default_factory=list)
    preempted: list[str] = field(default_factory=list)

    def samples_for(self, seq_id: int) -> int:
        """Tokens the sampler draws for `seq_id` this step (1 unless num_samples says)."""
        return self.num_samples.get(seq_id, 1)

    def add(self, req: Request, seq: Sequence, start: int, n: int, remaining: int) -> None:
        """Put `n` tokens of `seq` from `start` into the step (their slots are in
        place); remaining: its tokens left to compute, so n == remaining samples."""
        if n == remaining:
            self.sample_seq_ids.add(seq.seq_id)
            if n == 1 and seq.output_token_ids:         # its last sampled token: a decode
                self.decodes.append(seq)
                self.decode_requests.append(req)
                self.decode_starts.append(start)
                return
            if req.n > 1 and not req.is_group:          # the first sample: n of them
                self.num_samples[seq.seq_id] = req.n
        self.prefills.append(ScheduledSequence(req, seq, start, n, True, n == remaining))
        self.num_prefill_tokens += n

    @property
    def num_decode_tokens(self) -> int:
        return len(self.decodes)

    @property
    def scheduled(self) -> list[ScheduledSequence]:
        decodes = [ScheduledSequence(r, s, p, 1, False, True) for s, r, p in
                   zip(self.decodes, self.decode_requests, self.decode_starts)]
        return decodes + self.prefills
