"""`pagedlm trace "prompt"`: follow one request through every layer of the engine,
from real engine events (examples/trace_request.py's integration project, as a tool)."""
from __future__ import annotations

import argparse
import json
import sys

from engine.entrypoints.cli_engine_args import add_engine_arguments, engine_args_from

EPILOG = """\
examples:
  pagedlm trace "Hello world" --max-tokens 5
  pagedlm trace "Hello world" --max-tokens 5 --background 2 --num-gpu-blocks 8   # batching, preemption
  pagedlm trace "Hello world" --json > trace.json
"""

_BACKGROUND = ("The quick brown fox jumps over the lazy dog because",
               "In a paged KV cache, every sequence owns a list of blocks that",
               "Continuous batching lets a new request join while others decode, so")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("trace", help="trace one request through the engine's layers",
                              description=__doc__, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("prompt")
    p.add_argument("--max-tokens", type=int, default=5)
    p.add_argument("--background", type=int, default=0,
                   help="other requests (16 new tokens each) run beside the traced one")
    p.add_argument("--json", action="store_true", help="the raw events as JSON")
    add_engine_arguments(p)
    p.set_defaults(handler=run)


def run(ns: argparse.Namespace) -> int:
    from engine.entrypoints.tracer import RequestTracer, format_trace
    from engine.llm_engine import LLMEngine
    from engine.sampling.sampling_params import SamplingParams

    if ns.background < 0:
        print("pagedlm trace: error: --background must be >= 0", file=sys.stderr)
        return 2
    try:
        engine = LLMEngine.from_engine_args(engine_args_from(ns))
        tracer = RequestTracer()
        engine.add_observer(tracer)
        engine.add_request("traced", ns.prompt, SamplingParams(temperature=0.0,
                                                               max_tokens=ns.max_tokens))
        for i in range(ns.background):
            engine.add_request(f"background-{i}", _BACKGROUND[i % len(_BACKGROUND)],
                               SamplingParams(temperature=0.0, max_tokens=16))
    except ValueError as e:
        print(f"pagedlm trace: error: {e}", file=sys.stderr)
        return 2
    final = None
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.request_id == "traced" and out.finished:
                final = out
    if ns.json:
        print(json.dumps({"setup": engine.log_lines, "events": tracer.events}, indent=1))
        return 0
    print("=" * 70 + "\nINITIALIZATION\n" + "=" * 70)
    for line in engine.log_lines:
        print(line)
    print(f"Block manager: {engine.cache_config.num_gpu_blocks} blocks of "
          f"{engine.cache_config.block_size} tokens")
    for line in format_trace(tracer.events, "traced"):
        print(line)
    if final is not None:
        c = final.outputs[0]
        print("=" * 70 + "\nCOMPLETION\n" + "=" * 70)
        print(f"Output: {c.text!r}\nTotal tokens generated: {len(c.token_ids)} "
              f"(finish reason {c.finish_reason})")
    return 0
