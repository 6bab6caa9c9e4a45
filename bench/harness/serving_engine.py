"""A serving workload run on the real LLMEngine, in wall-clock time.

Each request is added once its arrival offset has passed and carries that planned
arrival (so a request the loop picks up late pays the wait, as a server's queue
would); the engine is stepped while anything is live. The times are the engine's
own: RequestOutput.metrics holds the arrival and one time.monotonic() per generated
token, which serving.RequestTimes turns into TTFT / TPOT / ITL / E2EL. Greedy and
ignore_eos, so every request runs to its length and the tokens are a fingerprint.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from bench.fingerprint import token_digest
from bench.harness.serving import RequestTimes
from bench.harness.workloads import Workload
from engine.sampling.sampling_params import SamplingParams

# The engine stamps its times with time.monotonic: the arrivals must be on that clock.
CLOCK = time.monotonic


def request_times(request_id: str, metrics: Any) -> RequestTimes:
    """A finished request's times from its RequestMetrics (arrival_time, token_times)."""
    if not metrics.token_times:
        raise ValueError(f"request {request_id!r} finished without a token time")
    return RequestTimes(request_id, float(metrics.arrival_time), [float(t) for t in metrics.token_times])


def run_workload(engine: Any, w: Workload, sleep: Callable[[float], None] = time.sleep,
                 max_steps: int = 1_000_000) -> tuple[list[RequestTimes], str]:
    """Per-request times of one run of `w` on `engine` (an idle LLMEngine), and a digest of
    the tokens each request produced, in request order."""
    if engine.has_unfinished_requests():
        raise ValueError("run_workload: the engine already has requests in flight")
    n = len(w.prompts)
    order = sorted(range(n), key=lambda i: w.arrivals[i])
    finished: dict[str, Any] = {}
    start, nxt, steps = CLOCK(), 0, 0
    while nxt < n or engine.has_unfinished_requests():
        now = CLOCK() - start
        while nxt < n and w.arrivals[order[nxt]] <= now:
            i = order[nxt]
            params = SamplingParams(temperature=0.0, max_tokens=w.output_lens[i], ignore_eos=True)
            engine.add_request(f"r{i}", {"prompt_token_ids": list(w.prompts[i])}, params,
                               arrival_time=start + w.arrivals[i])
            nxt += 1
        if not engine.has_unfinished_requests():
            sleep(max(0.0, w.arrivals[order[nxt]] - (CLOCK() - start)))   # idle until the next arrival
            continue
        for out in engine.step():
            if out.finished:
                finished[out.request_id] = out
        steps += 1
        if steps > max_steps:
            raise RuntimeError(f"run_workload: {w.name} did not finish in {max_steps} steps")
    ids = [f"r{i}" for i in range(n)]
    times = [request_times(rid, finished[rid].metrics) for rid in ids]
    return times, token_digest(finished[rid].outputs[0].token_ids for rid in ids)
