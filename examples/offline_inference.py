#!/usr/bin/env python3
"""The main job (`make run`): the real SmolLM2-135M-Instruct answers a few prompts
on this machine through pagedlm's scheduler, paged KV cache and sampler."""
from __future__ import annotations

import argparse
import time

from engine import LLM, SamplingParams

PROMPTS = [
    "The capital of France is",
    "The three primary colors are",
    "def fibonacci(n):",
    "Paged attention stores the KV cache in",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    t0 = time.perf_counter()
    llm = LLM(model=args.model, device=args.device, swap_space=0.25)
    print(f"engine ready in {time.perf_counter() - t0:.1f} s: "
          + "; ".join(llm.llm_engine.log_lines))
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
    t1 = time.perf_counter()
    outputs = llm.generate(PROMPTS, params, use_tqdm=False)
    seconds = time.perf_counter() - t1
    generated = sum(len(o.outputs[0].token_ids) for o in outputs)
    for out in outputs:
        print(f"\n{out.prompt!r}\n  -> {out.outputs[0].text!r}")
    print(f"\n{len(outputs)} prompts, {generated} tokens in {seconds:.2f} s: "
          f"{generated / seconds:.1f} tokens/s (greedy, batch {len(outputs)})")


if __name__ == "__main__":
    main()
