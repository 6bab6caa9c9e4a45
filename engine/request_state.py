"""The engine's bookkeeping for one request: text, logprobs, times, how it ended.

The scheduler owns the token ids (engine.core); this keeps what the user sees:
the detokenised text of each sequence (cut at a stop string), its logprobs,
the prompt logprobs, and the request's timestamps. `output()` builds the
RequestOutput, cumulative or (stream=True) only what is new since the last one.
"""
from __future__ import annotations

import time
from typing import Any, Optional

from engine.core.request import Request
from engine.outputs import CompletionOutput, PositionLogprobs, RequestMetrics, RequestOutput


class SequenceText:
    """What one sequence of a request has produced, as the user sees it."""

    def __init__(self, index: int, detokenizer: Any | None, want_logprobs: bool) -> None:
        self.index = index
        self.detokenizer = detokenizer
        self.text = ""
        self.logprobs: Optional[list[PositionLogprobs]] = [] if want_logprobs else None
        self.cumulative_logprob = 0.0
        self.finish_reason: Optional[str] = None     # set by the engine (stop string, abort)
        self.stop_reason: int | str | None = None
        self.sent_text = 0                           # stream mode: what was returned already
        self.sent_tokens = 0


class RequestState:
    def __init__(self, request_id: str, prompt: Optional[str], prompt_token_ids: list[int],
                 params: Any, request: Request, generator: Any, stream: bool,
                 arrival_time: float) -> None:
        self.request_id = request_id
        self.prompt = prompt
        self.prompt_token_ids = prompt_token_ids
        self.params = params
        self.request = request
        self.generator = generator
        self.stream = stream
        self.metrics = RequestMetrics(arrival_time=arrival_time)
        self.prompt_logprobs: Optional[list[Optional[PositionLogprobs]]] = (
            [None] if params.prompt_logprobs is not None else None)
        self.texts: dict[int, SequenceText] = {}     # seq id -> its text
        self.finished = False

    def note_token(self, now: float) -> None:
        m = self.metrics
        if m.first_token_time is None:
            m.first_token_time = now
        m.last_token_time = now
        m.token_times.append(now)

    def finish(self, now: float | None = None) -> None:
        self.finished = True
        self.metrics.finished_time = time.monotonic() if now is None else now

    def output(self) -> RequestOutput:
        completions = []
        seqs = {s.seq_id: s for s in self.request.seqs}
        for seq_id, st in sorted(self.texts.items(), key=lambda kv: kv[1].index):
            seq = seqs.get(seq_id)
            tokens = list(seq.output_token_ids) if seq is not None else []
            reason = st.finish_reason or (seq.finish_reason if seq is not None else None)
            stop_reason = st.stop_reason
            if reason == "ignored" and stop_reason is None:
                stop_reason = self.request.error
            text, logprobs = st.text, st.logprobs
            if self.stream:
                text, tokens = text[st.sent_text:], tokens[st.sent_tokens:]
                logprobs = logprobs[st.sent_tokens:] if logprobs is not None else None
                st.sent_text, st.sent_tokens = len(st.text), st.sent_tokens + len(tokens)
            completions.append(CompletionOutput(
                index=st.index, text=text, token_ids=tokens,
                cumulative_logprob=st.cumulative_logprob if st.logprobs is not None else None,
                logprobs=logprobs, finish_reason=reason, stop_reason=stop_reason))
        return RequestOutput(self.request_id, self.prompt, self.prompt_token_ids,
                             self.prompt_logprobs, completions, self.finished, self.metrics)
