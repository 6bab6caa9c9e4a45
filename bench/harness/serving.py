"""Serving-shaped metrics, defined as vLLM's `bench serve` defines them.

Per request, from its timestamps (arrival, then the time each output token came out):
TTFT = first token - arrival; E2EL = last token - arrival; TPOT = (E2EL - TTFT) / (n - 1)
for n > 1 output tokens; ITL = the gaps between consecutive tokens. Goodput: requests per
second that met every SLO given (`ttft:ms`, `tpot:ms`, `e2el:ms`). Arrivals: a gamma
process of a given rate (burstiness 1 = Poisson; below 1 burstier), from a seeded
generator. Gating percentiles across repeated runs: each run's p50/p99 becomes one
"round" of a one-sample series, judged by the same U test machinery as times.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.harness.results import Run, Series

METRICS = ("ttft", "tpot", "itl", "e2el")


@dataclass
class RequestTimes:
    """Seconds on one clock: when the request arrived, when each output token was ready."""

    request_id: str
    arrival: float
    token_times: list[float] = field(default_factory=list)

    @property
    def ttft(self) -> float:
        return self.token_times[0] - self.arrival

    @property
    def e2el(self) -> float:
        return self.token_times[-1] - self.arrival

    @property
    def tpot(self) -> float | None:
        n = len(self.token_times)
        return (self.e2el - self.ttft) / (n - 1) if n > 1 else None

    @property
    def itl(self) -> list[float]:
        t = self.token_times
        return [b - a for a, b in zip(t, t[1:])]


def arrival_times(n: int, rate: float, burstiness: float = 1.0, seed: int = 0) -> list[float]:
    """n arrival times of a gamma process with mean rate `rate` per second (inf: all at 0)."""
    if n < 0:
        raise ValueError(f"arrival_times: n must be >= 0, got {n}")
    if not rate > 0:
        raise ValueError(f"arrival_times: rate must be > 0 (or inf), got {rate}")
    if not burstiness > 0:
        raise ValueError(f"arrival_times: burstiness must be > 0, got {burstiness}")
    if math.isinf(rate):
        return [0.0] * n
    gen = np.random.default_rng(seed)
    gaps = gen.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n)
    return [float(x) for x in np.cumsum(gaps) - gaps[0]]   # the first request at t = 0


def parse_slos(text: str) -> dict[str, float]:
    """'ttft:200 tpot:50' -> {'ttft': 0.2, 'tpot': 0.05} (milliseconds in, seconds out)."""
    out = {}
    for part in text.split():
        name, _, value = part.partition(":")
        if name not in ("ttft", "tpot", "e2el") or not value:
            raise ValueError(f"slo {part!r}: expected ttft:MS, tpot:MS or e2el:MS")
        try:
            out[name] = float(value) / 1e3
        except ValueError:
            raise ValueError(f"slo {part!r}: {value!r} is not a number of milliseconds") from None
    return out


def parse_percentiles(text: str) -> tuple[float, ...]:
    """'50,90,99' -> (50.0, 90.0, 99.0): the percentiles reported (and gated) of each metric."""
    out = []
    for part in text.split(","):
        try:
            p = float(part)
        except ValueError:
            raise ValueError(f"percentile {part.strip()!r}: not a number (expected e.g. 50,90,99)") from None
        if not 0 < p <= 100:
            raise ValueError(f"percentile {p:g}: must be in (0, 100]")
        out.append(p)
    return tuple(out)


def _values(requests: Sequence[RequestTimes], metric: str) -> list[float]:
    if metric == "itl":
        return [x for r in requests for x in r.itl]
    values = [getattr(r, metric) for r in requests]
    return [v for v in values if v is not None]


def summarize(requests: Sequence[RequestTimes], percentiles: Sequence[float] = (50, 90, 99),
              slos: dict[str, float] | None = None) -> dict[str, float]:
    """mean / median / pXX of every metric (seconds), throughput and goodput (requests/s)."""
    done = [r for r in requests if r.token_times]
    if not done:
        raise ValueError("summarize: no request produced a token")
    out: dict[str, float] = {}
    for metric in METRICS:
        values = np.asarray(_values(done, metric), dtype=float)
        if values.size == 0:
            continue
        out[f"mean_{metric}"] = float(values.mean())
        out[f"median_{metric}"] = float(np.median(values))
        for p in percentiles:
            out[f"p{p:g}_{metric}"] = float(np.percentile(values, p))
    span = max(r.token_times[-1] for r in done) - min(r.arrival for r in done)
    out["duration_s"] = span
    out["request_throughput"] = len(done) / span if span > 0 else float("inf")
    out["output_token_throughput"] = sum(len(r.token_times) for r in done) / span if span > 0 else float("inf")
    if slos:
        good = [r for r in done if all((getattr(r, m) or 0.0) <= limit for m, limit in slos.items())]
        out["goodput"] = len(good) / span if span > 0 else float("inf")
        out["good_fraction"] = len(good) / len(done)
    return out


def percentile_run(runs: Sequence[dict[str, float]], keys: Sequence[str], source: str,
                   machine: dict | None = None) -> Run:
    """A side for compare_runs: per key (e.g. 'p99_ttft'), one round per repeated run."""
    benchmarks = {k: Series(k, rounds=[(r[k],) for r in runs], fingerprint=None) for k in keys}
    return Run(Path(source), machine or {"cpu": None, "cores": None, "gpu": None}, benchmarks)
