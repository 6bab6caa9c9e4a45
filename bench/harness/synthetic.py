"""Synthetic pytest-benchmark JSON with known truth, for the harness's own tests and demos.

Samples are log-normal around a chosen median (timing noise is skewed to the slow
side), drawn from an explicit numpy Generator so every document is reproducible.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MACHINE = {"node": "synthetic", "cpu": {"brand_raw": "Synthetic CPU", "count": 2}, "gpu": None}


def noisy(gen: np.random.Generator, median_s: float, n: int, noise: float = 0.03,
          round_shift: float = 0.0) -> list[float]:
    """n samples with median ~median_s; `round_shift` (a fraction) moves the whole round."""
    if median_s <= 0 or n < 1 or noise < 0:
        raise ValueError(f"noisy: need median_s > 0, n >= 1, noise >= 0; got {median_s}, {n}, {noise}")
    scale = median_s * (1 + round_shift)
    return [float(x) for x in scale * np.exp(gen.normal(0.0, noise, size=n))]


def document(benchmarks: dict[str, list[float]], machine: dict | None = None,
             fingerprints: dict[str, dict] | None = None, commit: str = "0" * 40,
             in_stats: bool = True) -> dict:
    """A pytest-benchmark document; samples in stats.data (as --benchmark-save-data
    writes them) or, with in_stats=False, in extra_info.samples_s (as bench/ records)."""
    out = []
    for name, samples in benchmarks.items():
        extra: dict = {}
        if fingerprints and name in fingerprints:
            extra["fingerprint"] = fingerprints[name]
        stats = {"median": float(np.median(samples)), "rounds": len(samples)}
        if in_stats:
            stats["data"] = list(samples)
        else:
            extra["samples_s"] = list(samples)
        out.append({"name": name.split("::")[-1], "fullname": name, "group": None, "params": None,
                    "extra_info": extra, "stats": stats})
    return {"machine_info": dict(machine or MACHINE), "commit_info": {"id": commit, "dirty": False},
            "benchmarks": out, "datetime": "2026-12-02T00:00:00", "version": "5.3.1"}


def write_rounds(folder: Path, rounds: list[dict]) -> Path:
    """One file per round, as the gate writes them; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, doc in enumerate(rounds):
        (folder / f"round{i}.json").write_text(json.dumps(doc))
    return folder


def suite(gen: np.random.Generator, medians: dict[str, float], rounds: int, n: int, noise: float = 0.03,
          slowdown: dict[str, float] | None = None, round_noise: float = 0.0, **doc_kw) -> list[dict]:
    """`rounds` documents of a suite; `slowdown` ({name: fraction}) plants a change."""
    slowdown = slowdown or {}
    docs = []
    for _ in range(rounds):
        shift = float(gen.normal(0.0, round_noise)) if round_noise else 0.0
        docs.append(document({name: noisy(gen, m * (1 + slowdown.get(name, 0.0)), n, noise, shift)
                              for name, m in medians.items()}, **doc_kw))
    return docs
