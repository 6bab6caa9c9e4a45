"""A/B benchmark gate: does HEAD run slower than BASE? The same as `pagedlm bench compare`.

    python3 ci/bench_gate.py BASE HEAD [--threshold 5%] [--alpha 0.01] [--report FILE]

The logic lives in bench/harness (compare.py, stats.py); this script only calls it,
for machines where the package is not installed. Exit status: 0 no regression,
1 regression (or a benchmark removed), 2 bad input.
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness.commands import compare_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(compare_main(prog="ci/bench_gate.py"))
