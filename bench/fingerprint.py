"""The workload fingerprint every benchmark records in extra_info["fingerprint"].

Two runs are compared only where each benchmark's fingerprint is equal (bench.harness
refuses otherwise and says which key differs): the shape, seed, lengths and
iteration counts of what was timed and, where the benchmark produces tokens, a
digest of them. Torch-free, so the CPU benchmarks stay light.
"""
from __future__ import annotations

import hashlib
import json
from typing import Iterable

Scalar = str | int | float | bool | None


def fingerprint(**workload: Scalar | list | tuple) -> dict[str, object]:
    """The workload as a JSON-safe dict; ValueError names a value JSON cannot hold."""
    out: dict[str, object] = {}
    for key, value in workload.items():
        if isinstance(value, tuple):
            value = list(value)
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"fingerprint: {key}={value!r} is not a JSON value ({exc})") from None
        out[key] = value
    return out


def token_digest(token_ids: Iterable[Iterable[int]]) -> str:
    """A short digest of the token ids a run produced, one sequence per item, in order."""
    h = hashlib.sha256()
    for seq in token_ids:
        h.update(",".join(str(int(t)) for t in seq).encode())
        h.update(b";")
    return h.hexdigest()[:16]


def runs_digest(digests: Iterable[str]) -> str:
    """The token digest of repeated runs of one workload: the one digest when every run
    produced the same tokens, else all of them joined, so a comparison with a side that
    ran deterministically is refused (the tokens differ) rather than judged."""
    found = sorted(set(digests))
    if not found:
        raise ValueError("runs_digest: no runs")
    return "|".join(found)
