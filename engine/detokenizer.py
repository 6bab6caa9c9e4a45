"""Incremental detokenisation of one sequence and stop-string matching. No torch.

IncrementalDetokenizer turns each new token into the text it adds, decoding
only a short window of tokens per step. A byte-level tokenizer can split one
character over several tokens: while the window's text ends in an incomplete
character ("\\ufffd") nothing is emitted; the delta comes out whole once the
bytes complete (the prefix-offset / read-offset method). `flush()` gives what
is still held back when the sequence ends (the replacement characters that
`tokenizer.decode` would show for a dangling partial character).

Stop strings: after each delta the engine calls find_stop(text, len(delta),
params.stop), which looks only where the new characters could complete a stop
string, then truncate_at_stop. Streaming output may hold back the last
`params.output_text_buffer_length` characters of an unfinished sequence (a stop
string could still be completing there: vLLM V0's rule): visible_text().
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

# Prompt tokens decoded with the first output token: enough context for tokenizers
# whose decoding of a token depends on its neighbours (a leading-space marker).
_PROMPT_CONTEXT = 5
_INCOMPLETE = "\ufffd"


class Tokenizer(Protocol):
    """The part of a HF tokenizer the detokenizer uses."""

    def convert_ids_to_tokens(self, ids: list[int],
                              skip_special_tokens: bool = ...) -> list[str]: ...

    def convert_tokens_to_string(self, tokens: list[str]) -> str: ...


class IncrementalDetokenizer:
    """Text of one sequence's output, one token at a time.

    prompt_token_ids give decoding context only; `text` is the output's text.
    skip_special_tokens: special tokens add no text (params.skip_special_tokens).
    """

    def __init__(self, tokenizer: Tokenizer, prompt_token_ids: Sequence[int],
                 skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self._tokens: list[str] = self._to_tokens(prompt_token_ids)
        # tokens[prefix:read] decoded to the text emitted last; tokens[read:] are
        # not emitted yet.
        self._read = len(self._tokens)
        self._prefix = max(self._read - _PROMPT_CONTEXT, 0)
        self._text = ""
        self.token_ids: list[int] = []

    @property
    def text(self) -> str:
        """All output text emitted so far (the concatenated deltas)."""
        return self._text

    def append(self, token_id: int) -> str:
        """Add one output token; returns the text it completes ("" while held back)."""
        self.token_ids.append(token_id)
        self._tokens.extend(self._to_tokens([token_id]))
        delta = self._pending()
        if delta and not delta.endswith(_INCOMPLETE):
            self._prefix, self._read = self._read, len(self._tokens)
            self._text += delta
            return delta
        return ""

    def flush(self) -> str:
        """At the end of the sequence: emit what is still held back."""
        delta = self._pending()
        self._prefix, self._read = self._read, len(self._tokens)
        self._text += delta
        return delta

    def peek(self, token_id: int) -> str:
        """The text `token_id` would add now, without adding it (for the decoded
        token of a logprob entry); "" where it would be held back."""
        tokens = self._tokens[self._prefix:] + self._to_tokens([token_id])
        delta = self._diff(tokens)
        return "" if delta.endswith(_INCOMPLETE) else delta

    def _pending(self) -> str:
        return self._diff(self._tokens[self._prefix:])

    def _diff(self, window: list[str]) -> str:
        emitted = self._tokenizer.convert_tokens_to_string(self._tokens[self._prefix:self._read])
        full = self._tokenizer.convert_tokens_to_string(window)
        return full[len(emitted):] if len(full) > len(emitted) else ""

    def _to_tokens(self, ids: Sequence[int]) -> list[str]:
        return list(self._tokenizer.convert_ids_to_tokens(list(ids),
                                                          skip_special_tokens=self._skip))


def find_stop(text: str, new_len: int, stop: Sequence[str]) -> tuple[int, str] | None:
    """The stop string that the last `new_len` characters of `text` complete, as
    (start index in text, stop string): the earliest start; on a tie the one
    listed first. None when no stop string ends inside the new characters (one
    that ended earlier was found at an earlier call)."""
    if isinstance(new_len, bool) or not isinstance(new_len, int) or not 0 <= new_len <= len(text):
        raise ValueError(f"new_len must be an int in [0, len(text)={len(text)}], got {new_len!r}")
    if any(not isinstance(s, str) or not s for s in stop):
        raise ValueError(f"stop must hold non-empty strings, got {list(stop)!r}")
    best: tuple[int, str] | None = None
    if new_len == 0:
        return None
    for s in stop:
        # An occurrence ending inside the new characters starts at or after here.
        start = max(len(text) - new_len - len(s) + 1, 0)
        index = text.find(s, start)
        if index != -1 and (best is None or index < best[0]):
            best = (index, s)
    return best


def truncate_at_stop(text: str, match: tuple[int, str], include_stop_str_in_output: bool) -> str:
    """The output text once `match` (from find_stop) ended it: cut before the stop
    string, or just after it when include_stop_str_in_output."""
    index, stop_str = match
    return text[:index + len(stop_str)] if include_stop_str_in_output else text[:index]


def visible_text(text: str, buffer_length: int, finished: bool) -> str:
    """What a streamed output shows: all of it once finished, else all but the
    last buffer_length characters (params.output_text_buffer_length)."""
    if buffer_length < 0:
        raise ValueError(f"buffer_length must be >= 0, got {buffer_length!r}")
    if finished or buffer_length == 0:
        return text
    return text[:max(len(text) - buffer_length, 0)]
