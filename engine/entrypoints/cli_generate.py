"""`pagedlm generate "prompt"`: stream a model's reply as it is produced."""
from __future__ import annotations

import argparse
import json
import sys
import time

from engine.entrypoints.cli_engine_args import add_engine_arguments, engine_args_from

EPILOG = """\
examples:
  pagedlm generate "The capital of France is"
  pagedlm generate --chat "Write a haiku about paged memory" --max-tokens 48
  pagedlm generate "Once upon a time" --temperature 0.8 --top-p 0.95 --seed 1 --n 2 --json
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("generate", help="generate text from a prompt (streams as it goes)",
                              description=__doc__, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("prompt", help="the prompt text (with --chat: the user's message)")
    p.add_argument("--chat", action="store_true", help="apply the tokenizer's chat template")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="0 or -1: off")
    p.add_argument("--seed", type=int, default=None,
                   help="sampling seed: the same tokens whatever else runs beside the request")
    p.add_argument("--n", type=int, default=1, help="sequences to sample for the prompt")
    p.add_argument("--json", action="store_true", help="print one JSON object at the end")
    p.add_argument("-v", "--verbose", action="store_true", help="print the engine's set-up log")
    add_engine_arguments(p)
    p.set_defaults(handler=run)


def run(ns: argparse.Namespace) -> int:
    from engine.llm_engine import LLMEngine
    from engine.sampling.sampling_params import SamplingParams

    try:
        params = SamplingParams(max_tokens=ns.max_tokens, temperature=ns.temperature,
                                top_p=ns.top_p, top_k=ns.top_k, seed=ns.seed, n=ns.n)
        start = time.perf_counter()
        engine = LLMEngine.from_engine_args(engine_args_from(ns))
        load_s = time.perf_counter() - start
        if ns.verbose:
            for line in engine.log_lines:
                print(f"[pagedlm] {line}", file=sys.stderr)
        prompt: object = ns.prompt
        if ns.chat:
            tok = engine.tokenizer
            if tok is None or not getattr(tok, "chat_template", None):
                raise ValueError("--chat needs a tokenizer with a chat template")
            prompt = {"prompt": ns.prompt, "prompt_token_ids": list(tok.apply_chat_template(
                [{"role": "user", "content": ns.prompt}], add_generation_prompt=True,
                tokenize=True, return_dict=False))}
        engine.add_request("0", prompt, params, stream=True)
    except ValueError as e:
        print(f"pagedlm generate: error: {e}", file=sys.stderr)
        return 2
    texts: dict[int, str] = {}
    tokens: dict[int, list[int]] = {}
    reasons: dict[int, object] = {}
    t0 = time.perf_counter()
    while engine.has_unfinished_requests():
        for out in engine.step():
            for c in out.outputs:
                texts[c.index] = texts.get(c.index, "") + c.text
                tokens.setdefault(c.index, []).extend(c.token_ids)
                reasons[c.index] = c.finish_reason
                if not ns.json and ns.n == 1:
                    print(c.text, end="", flush=True)
    seconds = time.perf_counter() - t0
    generated = sum(len(t) for t in tokens.values())
    if ns.json:
        print(json.dumps({"prompt": ns.prompt, "outputs": [
            {"index": i, "text": texts[i], "token_ids": tokens[i], "finish_reason": reasons[i]}
            for i in sorted(texts)], "load_seconds": round(load_s, 3),
            "generate_seconds": round(seconds, 3),
            "tokens_per_second": round(generated / seconds, 2) if seconds else None}, indent=2))
        return 0
    if ns.n > 1:
        for i in sorted(texts):
            print(f"--- output {i} ({reasons[i]}) ---\n{texts[i]}")
    else:
        print()
    print(f"[{generated} tokens in {seconds:.2f} s, {generated / max(seconds, 1e-9):.1f} tok/s; "
          f"model loaded in {load_s:.1f} s]", file=sys.stderr)
    return 0
