"""The request tracer: examples/trace_request.py's layers, fed by real engine events.

`RequestTracer` subscribes to an LLMEngine and records every event as a plain
dict (the `--json` output); `format_trace` renders those records as the layers
that script's tracer prints (API call, tokenisation, request creation, scheduling,
block tables, execution, sampling, sequence updates, completion).
"""
from __future__ import annotations

from typing import Any

from engine.observer import (EngineObserver, RequestAdded, RequestFinished, StepExecuted,
                             StepScheduled, TokensSampled)

_RULE = "=" * 70


class RequestTracer(EngineObserver):
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def request_added(self, e: RequestAdded) -> None:
        p = e.params
        self.events.append({"event": "request_added", "request_id": e.request_id,
                            "prompt": e.prompt, "prompt_token_ids": list(e.prompt_token_ids),
                            "seq_ids": list(e.seq_ids),
                            "params": {"temperature": p.temperature, "top_p": p.top_p,
                                       "top_k": p.top_k, "max_tokens": p.max_tokens,
                                       "seed": p.seed, "n": p.n}})

    def step_scheduled(self, e: StepScheduled) -> None:
        self.events.append({
            "event": "step_scheduled", "step": e.step,
            "scheduled": [{"request_id": s.request.request_id, "seq_id": s.seq_id,
                           "kind": "prefill" if s.is_prompt else "decode", "start": s.start,
                           "num_tokens": s.num_new_tokens, "samples": s.do_sample}
                          for s in e.scheduled],
            "num_batched_tokens": e.num_batched_tokens,
            "num_prefill_tokens": e.num_prefill_tokens, "num_decode_tokens": e.num_decode_tokens,
            "block_tables": {str(k): v for k, v in e.block_tables.items()},
            "blocks_to_swap_in": e.blocks_to_swap_in, "blocks_to_swap_out": e.blocks_to_swap_out,
            "blocks_to_copy": e.blocks_to_copy, "preempted": e.preempted, "ignored": e.ignored,
            "queues": e.queues, "free_gpu_blocks": e.free_gpu_blocks,
            "free_cpu_blocks": e.free_cpu_blocks})

    def step_executed(self, e: StepExecuted) -> None:
        self.events.append({"event": "step_executed", "step": e.step,
                            "input_ids": e.input_ids, "positions": e.positions,
                            "slot_mapping": e.slot_mapping, "seconds": e.seconds})

    def tokens_sampled(self, e: TokensSampled) -> None:
        self.events.append({"event": "tokens_sampled", "step": e.step,
                            "samples": [{"request_id": r, "seq_id": s, "token_id": t, "text": d}
                                        for r, s, t, d in e.samples]})

    def request_finished(self, e: RequestFinished) -> None:
        self.events.append({"event": "request_finished", "step": e.step,
                            "request_id": e.request_id, "finish_reasons": e.finish_reasons,
                            "free_gpu_blocks": e.free_gpu_blocks})


def format_trace(events: list[dict[str, Any]], focus: str) -> list[str]:
    """Human-readable lines; the `focus` request in full, the others in the counts."""
    lines: list[str] = []
    say = lines.append
    lengths: dict[int, int] = {}
    for ev in events:
        kind = ev["event"]
        if kind == "request_added" and ev["request_id"] == focus:
            p = ev["params"]
            say(_RULE), say("LAYER 1: API CALL (engine/entrypoints/llm.py)"), say(_RULE)
            say(f"Input prompt: {ev['prompt']!r}")
            say(f"Sampling params: temperature {p['temperature']}, max_tokens {p['max_tokens']}, "
                f"top_p {p['top_p']}, top_k {p['top_k']}, seed {p['seed']}")
            say(f"Tokenization: {len(ev['prompt_token_ids'])} tokens {ev['prompt_token_ids']}")
            say(f"Request created: id {focus!r}, sequence(s) {ev['seq_ids']}, added to the "
                f"waiting queue")
            for sid in ev["seq_ids"]:
                lengths[sid] = len(ev["prompt_token_ids"])
        elif kind == "request_added":
            say(f"(background request {ev['request_id']!r}: {len(ev['prompt_token_ids'])} "
                f"prompt tokens)")
        elif kind == "step_scheduled":
            rows = ev["scheduled"]
            prefills = sum(r["kind"] == "prefill" for r in rows)
            say(""), say(_RULE), say(f"LAYER 2: SCHEDULING (step {ev['step']})"), say(_RULE)
            say(f"Scheduler.schedule(): {len(rows)} sequences, {ev['num_batched_tokens']} "
                f"batched tokens ({ev['num_prefill_tokens']} prefill in {prefills} chunks, "
                f"{ev['num_decode_tokens']} decode)")
            q = ev["queues"]
            say(f"Queues after scheduling: waiting {q['waiting']}, running {q['running']}, "
                f"swapped {q['swapped']}")
            for r in rows:
                mine = "  <- traced" if r["request_id"] == focus else ""
                say(f"  {r['request_id']!r} seq {r['seq_id']}: {r['kind']} of {r['num_tokens']} "
                    f"token(s) from position {r['start']}{mine}")
            for sid, table in ev["block_tables"].items():
                say(f"Block table of seq {sid}: {table}")
            for name in ("blocks_to_swap_out", "blocks_to_swap_in", "blocks_to_copy", "preempted",
                         "ignored"):
                if ev[name]:
                    say(f"{name}: {ev[name]}")
            say(f"Free blocks: {ev['free_gpu_blocks']} device, {ev['free_cpu_blocks']} CPU")
        elif kind == "step_executed":
            say(""), say("LAYER 3: MODEL EXECUTION")
            say(f"ModelRunner.execute(): {len(ev['input_ids'])} tokens in "
                f"{ev['seconds'] * 1e3:.1f} ms")
            say(f"  input ids {ev['input_ids']}")
            say(f"  positions {ev['positions']}")
            say(f"  slots     {ev['slot_mapping']}")
        elif kind == "tokens_sampled":
            for s in ev["samples"]:
                if s["request_id"] != focus:
                    continue
                lengths[s["seq_id"]] = lengths.get(s["seq_id"], 0) + 1
                say(f"Sampling: seq {s['seq_id']} token {s['token_id']} -> {s['text']!r}")
                say(f"Sequence update: length {lengths[s['seq_id']]} tokens")
        elif kind == "request_finished":
            say(f"Request {ev['request_id']!r} finished ({', '.join(map(str, ev['finish_reasons']))})"
                f"; its blocks are freed, {ev['free_gpu_blocks']} device blocks free")
    return lines
