"""The batched sampler: one call turns the logits of a step's sampling rows into
token ids (and logprobs where asked).

Call: `Sampler(generator)(logits [N, V], rows) -> SamplerOutput`, one SamplingRow
per logits row (one per running sequence; a request with n > 1 has n rows).

Order of processing (vLLM's), all on the whole batch at once:
  1. min_tokens: while len(output) < min_tokens, the row's stop_token_ids and,
     unless ignore_eos, its eos_token_ids get -inf;
  2. repetition penalty (prompt + output tokens), then frequency and presence
     penalties (output tokens), engine/sampling/penalties.py;
  3. greedy rows (temperature 0): argmax of these logits, ties to the lowest id
     (torch.argmax), no randomness consumed; the steps below skip them;
  4. temperature, then top-k, top-p, min-p (engine/sampling/filters.py: the kept
     sets and their tie rule);
  5. a draw from softmax of what is left by the exponential race
     argmax(q / E), E ~ Exp(1) per token (equivalent to a categorical draw).

Randomness: a row whose request has a seed draws its V exponentials from
row.generator only, so its tokens do not depend on the batch size, its position
or the other rows. The engine makes that generator once per request with
make_generator(params.seed, device) and keeps it across steps; the n rows of one
request share it and consume it in batch order (the scheduler keeps a request's
sequences together in index order, so the draws are reproducible). Rows without
a seed draw together from the sampler's generator (torch's default one if None).

Logprobs (rows with params.logprobs set): of the raw model logits, before any of
the steps above (engine/sampling/logprobs.py); the sampled token always has its
entry.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from engine.sampling.filters import apply_min_p, apply_top_k, apply_top_p
from engine.sampling.logprobs import TokenLogprobs, compute_logprobs
from engine.sampling.penalties import apply_penalties, block_tokens
from engine.sampling.sampling_params import SamplingParams, SamplingType


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The per-request generator of a seeded request (on the logits' device)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


@dataclasses.dataclass
class SamplingRow:
    """One logits row: the sequence's params and token history, its generator
    (seeded requests only; None otherwise) and the model's EOS ids."""

    params: SamplingParams
    prompt_token_ids: Sequence[int] = ()
    output_token_ids: Sequence[int] = ()
    generator: torch.Generator | None = None
    eos_token_ids: Sequence[int] = ()

    def blocked_ids(self) -> list[int]:
        """Ids that may not be sampled yet (min_tokens not reached)."""
        p = self.params
        if len(self.output_token_ids) >= p.min_tokens:
            return []
        return list(p.stop_token_ids) + ([] if p.ignore_eos else list(self.eos_token_ids))


@dataclasses.dataclass
class SamplerOutput:
    """token_ids[i]: the token of row i. logprobs[i]: its TokenLogprobs, with the
    row's `params.logprobs` top entries, or None where the row asked none."""

    token_ids: list[int]
    logprobs: list[TokenLogprobs | None]


class Sampler:
    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator

    def __call__(self, logits: torch.Tensor, rows: Sequence[SamplingRow]) -> SamplerOutput:
        raw = _checked(logits, rows)
        x = self.process(raw, rows)
        tokens = self._draw(x, rows).tolist()
        asked = [i for i, r in enumerate(rows) if r.params.logprobs is not None]
        logprobs: list[TokenLogprobs | None] = [None] * len(rows)
        if asked:
            index = torch.tensor(asked, device=raw.device)
            found = compute_logprobs(raw.index_select(0, index), [tokens[i] for i in asked],
                                     [rows[i].params.logprobs for i in asked])
            for i, entry in zip(asked, found):
                logprobs[i] = entry
        return SamplerOutput(tokens, logprobs)

    def process(self, logits: torch.Tensor, rows: Sequence[SamplingRow]) -> torch.Tensor:
        """Steps 1-4 on a float32 copy: the logits the draw uses, -inf outside
        each row's kept set. Greedy rows get steps 1-2 only."""
        x = _checked(logits, rows).clone()
        params = [r.params for r in rows]
        block_tokens(x, [r.blocked_ids() for r in rows])
        if any(p.repetition_penalty != 1.0 or p.frequency_penalty != 0.0
               or p.presence_penalty != 0.0 for p in params):
            apply_penalties(x, [r.prompt_token_ids for r in rows],
                            [r.output_token_ids for r in rows],
                            [p.repetition_penalty for p in params],
                            [p.frequency_penalty for p in params],
                            [p.presence_penalty for p in params])
        random = [not p.is_greedy for p in params]
        if not any(random):
            return x
        # Greedy rows pass through as temperature 1 with every filter off.
        temps = [p.temperature if r else 1.0 for p, r in zip(params, random)]
        if any(t != 1.0 for t in temps):
            x.div_(torch.tensor(temps, dtype=torch.float32, device=x.device)[:, None])
        apply_top_k(x, [p.top_k if r else 0 for p, r in zip(params, random)])
        apply_top_p(x, [p.top_p if r else 1.0 for p, r in zip(params, random)])
        apply_min_p(x, [p.min_p if r else 0.0 for p, r in zip(params, random)])
        return x

    def _draw(self, x: torch.Tensor, rows: Sequence[SamplingRow]) -> torch.Tensor:
        tokens = x.argmax(dim=-1)
        random = [i for i, r in enumerate(rows) if not r.params.is_greedy]
        if not random:
            return tokens
        vocab, dev = x.shape[1], x.device
        index = torch.tensor(random, device=dev)
        probs = x.index_select(0, index).softmax(dim=-1)
        race = torch.empty_like(probs)
        unseeded = [j for j, i in enumerate(random)
                    if rows[i].params.sampling_type is SamplingType.RANDOM]
        if unseeded:
            race[torch.tensor(unseeded, device=dev)] = torch.empty(
                len(unseeded), vocab, device=dev).exponential_(generator=self.generator)
        for j, i in enumerate(random):
            if rows[i].params.sampling_type is SamplingType.RANDOM_SEED:
                race[j] = torch.empty(vocab, device=dev).exponential_(
                    generator=rows[i].generator)
        # An exponential of exactly 0 would turn a dropped token (prob 0) into 0/0.
        race.clamp_(min=torch.finfo(torch.float32).tiny)
        tokens[index] = (probs / race).argmax(dim=-1)
        return tokens


def _checked(logits: torch.Tensor, rows: Sequence[SamplingRow]) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or not logits.is_floating_point():
        raise ValueError(f"logits must be a 2-D float tensor [rows, vocab], got "
                         f"{getattr(logits, 'shape', type(logits))!r}")
    if logits.shape[0] != len(rows):
        raise ValueError(f"rows has {len(rows)} entries for {logits.shape[0]} logits rows")
    if logits.shape[1] == 0:
        raise ValueError("logits has an empty vocabulary dimension")
    for i, row in enumerate(rows):
        if not isinstance(row.params, SamplingParams):
            raise ValueError(f"rows[{i}].params must be SamplingParams, got {row.params!r}")
        gen = row.generator
        if row.params.sampling_type is SamplingType.RANDOM_SEED:
            if gen is None:
                raise ValueError(f"rows[{i}].generator is None for a request with seed "
                                 f"{row.params.seed}: make one with make_generator")
            if gen.device.type != logits.device.type:
                raise ValueError(f"rows[{i}].generator is on {gen.device}, the logits on "
                                 f"{logits.device}")
    return logits.to(torch.float32)
