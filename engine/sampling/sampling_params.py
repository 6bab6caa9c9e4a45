"""SamplingParams: how one request samples, with vLLM's names and defaults. No torch.

Plain data: the sampler (engine/sampling/sampler.py) and the detokenizer read it,
the engine copies it per request. `dataclasses.replace(params, temperature=0.0)`
(or `clone()`) re-runs the validation and the normalisation below, which are
idempotent: top_k -1 is stored as 0 (both mean "off"), `stop` as a list of str,
`stop_token_ids` as a list of int.
"""
from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from typing import Any

# Below this temperature a request is greedy (vLLM's threshold).
_GREEDY_EPS = 1e-5
# torch.Generator.manual_seed accepts exactly this range.
_SEED_MIN, _SEED_MAX = -(1 << 63), (1 << 64) - 1


class SamplingType(enum.IntEnum):
    GREEDY = 0        # argmax, no randomness
    RANDOM = 1        # the sampler's own generator
    RANDOM_SEED = 2   # the request's generator, seeded from `seed`


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclasses.dataclass
class SamplingParams:
    """n: output sequences per request (one sampler row each).
    best_of: may be omitted; when given it must equal n (no best-of ranking here).
    temperature: 0 = greedy; top_p in (0, 1]; top_k: 0 or -1 = off, else >= 1;
    min_p in [0, 1]: drop tokens below min_p times the top token's probability.
    seed: makes the request's draws reproducible whatever else is in the batch.
    stop: strings that end the output (cut before them unless
    include_stop_str_in_output); stop_token_ids: token ids that end it.
    ignore_eos: EOS does not end the request. max_tokens: most output tokens
    (None = up to the model's length, resolved by the engine); min_tokens: EOS and
    stop ids are blocked until this many tokens were generated.
    logprobs / prompt_logprobs: how many top logprobs to return per generated /
    prompt token (the chosen token is always returned as well).
    presence_penalty, frequency_penalty in [-2, 2] (over output tokens);
    repetition_penalty > 0 (over prompt and output tokens; 1 = off).
    skip_special_tokens: leave special tokens out of the detokenised text.
    """

    n: int = 1
    best_of: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    skip_special_tokens: bool = True

    def __post_init__(self) -> None:
        self._check_types()
        self._normalise()
        self._check_ranges()

    # -- validation ------------------------------------------------------------
    def _check_types(self) -> None:
        for name in ("n", "top_k", "min_tokens"):
            _require(_is_int(getattr(self, name)), name, getattr(self, name), "an int")
        for name in ("best_of", "seed", "max_tokens", "logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            _require(value is None or _is_int(value), name, value, "an int or None")
        for name in ("presence_penalty", "frequency_penalty", "repetition_penalty",
                     "temperature", "top_p", "min_p"):
            value = getattr(self, name)
            _require(_is_number(value) and value == value, name, value, "a number (not NaN)")
        for name in ("include_stop_str_in_output", "ignore_eos", "skip_special_tokens"):
            value = getattr(self, name)
            _require(isinstance(value, bool), name, value, "a bool")
        stop = self.stop
        _require(stop is None or isinstance(stop, str) or (
            isinstance(stop, Sequence) and all(isinstance(s, str) for s in stop)),
            "stop", stop, "a str, a list of str or None")
        ids = self.stop_token_ids
        _require(ids is None or (isinstance(ids, Sequence) and not isinstance(ids, str)
                                 and all(_is_int(i) for i in ids)),
                 "stop_token_ids", ids, "a list of int or None")

    def _normalise(self) -> None:
        # The stored forms are the ones a second __post_init__ leaves unchanged.
        if self.top_k == -1:
            self.top_k = 0
        self.temperature = float(self.temperature)
        self.top_p = float(self.top_p)
        self.min_p = float(self.min_p)
        self.presence_penalty = float(self.presence_penalty)
        self.frequency_penalty = float(self.frequency_penalty)
        self.repetition_penalty = float(self.repetition_penalty)
        if self.stop is None:
            self.stop = []
        elif isinstance(self.stop, str):
            self.stop = [self.stop]
        else:
            self.stop = list(self.stop)
        self.stop_token_ids = [] if self.stop_token_ids is None else list(self.stop_token_ids)

    def _check_ranges(self) -> None:
        _require(self.n >= 1, "n", self.n, ">= 1")
        if self.best_of is not None:
            _require(self.best_of >= self.n, "best_of", self.best_of, f">= n ({self.n})")
            _require(self.best_of == self.n, "best_of", self.best_of,
                     f"equal to n ({self.n}): only best_of == n is supported")
        _require(-2.0 <= self.presence_penalty <= 2.0, "presence_penalty",
                 self.presence_penalty, "in [-2, 2]")
        _require(-2.0 <= self.frequency_penalty <= 2.0, "frequency_penalty",
                 self.frequency_penalty, "in [-2, 2]")
        _require(0.0 < self.repetition_penalty < float("inf"), "repetition_penalty",
                 self.repetition_penalty, "> 0 and finite")
        _require(0.0 <= self.temperature < float("inf"), "temperature",
                 self.temperature, ">= 0 and finite")
        _require(0.0 < self.top_p <= 1.0, "top_p", self.top_p, "in (0, 1]")
        _require(self.top_k >= 0, "top_k", self.top_k, "-1 or 0 (off) or >= 1")
        _require(0.0 <= self.min_p <= 1.0, "min_p", self.min_p, "in [0, 1]")
        if self.seed is not None:
            _require(_SEED_MIN <= self.seed <= _SEED_MAX, "seed", self.seed,
                     f"in [{_SEED_MIN}, {_SEED_MAX}]")
        _require(all(s for s in self.stop), "stop", self.stop, "free of empty strings")
        _require(all(i >= 0 for i in self.stop_token_ids), "stop_token_ids",
                 self.stop_token_ids, "non-negative ids")
        if self.max_tokens is not None:
            _require(self.max_tokens >= 1, "max_tokens", self.max_tokens, ">= 1")
        _require(self.min_tokens >= 0, "min_tokens", self.min_tokens, ">= 0")
        if self.max_tokens is not None:
            _require(self.min_tokens <= self.max_tokens, "min_tokens", self.min_tokens,
                     f"<= max_tokens ({self.max_tokens})")
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            _require(value is None or value >= 0, name, value, ">= 0 or None")

    # -- derived ----------------------------------------------------------------
    @property
    def sampling_type(self) -> SamplingType:
        if self.temperature < _GREEDY_EPS:
            return SamplingType.GREEDY
        return SamplingType.RANDOM if self.seed is None else SamplingType.RANDOM_SEED

    @property
    def is_greedy(self) -> bool:
        return self.sampling_type is SamplingType.GREEDY

    @property
    def output_text_buffer_length(self) -> int:
        """Characters a streamed, unfinished output holds back: the longest stop
        string but one could still be completing there (vLLM V0's rule)."""
        if not self.stop or self.include_stop_str_in_output:
            return 0
        return max(len(s) for s in self.stop) - 1

    def clone(self) -> "SamplingParams":
        """An independent copy (its lists are new)."""
        return dataclasses.replace(self)


def _require(ok: bool, name: str, value: Any, what: str) -> None:
    if not ok:
        raise ValueError(f"SamplingParams.{name} must be {what}, got {value!r}")
