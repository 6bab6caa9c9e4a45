"""The arguments of `pagedlm bench ...`, shared with the ci/ scripts.

Standard library only: `pagedlm` builds every sub-command's parser on each call,
so the statistics (scipy) and torch are imported by the handlers, not here.
"""
from __future__ import annotations

import argparse
from pathlib import Path

SUITE_NAMES = ("scheduler", "prefix", "kernels", "engine", "all")

EXIT_HELP = "Exit status: 0 no regression, 1 regression (or a benchmark removed), 2 bad input."

COMPARE_HELP = """Compare two benchmark runs (pytest-benchmark JSON) and decide whether HEAD regressed.

Per benchmark: base and head medians, the change with a bootstrap 95 % interval,
the one-sided Mann-Whitney U p-value and a verdict: slower (a regression: past the
threshold AND significant after a Benjamini-Hochberg correction across the suite),
faster, same, inconclusive (a big change that is not significant, or too few
samples for the test; the note says how many it needs), too noisy (the A/A noise
floor exceeds the threshold: not gated), removed (fails unless --allow-removed), new.
Both runs must come from one machine and the same workload per benchmark.

examples:
  pagedlm bench compare base.json head.json
  pagedlm bench compare base_dir/ head_dir/ --threshold 3% --report report.md --plots plots/
"""


def fraction(text: str) -> float:
    """'5%' or '0.05' -> 0.05."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction like 5% or 0.05, got {text!r}") from None
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def add_judgement(p: argparse.ArgumentParser) -> None:
    """Options of every command that ends in a comparison."""
    p.add_argument("--threshold", type=fraction, default=0.05, metavar="PCT",
                   help="median slowdown that counts, e.g. 5%% or 0.05 (default 5%%)")
    p.add_argument("--alpha", type=fraction, default=0.01,
                   help="significance after the Benjamini-Hochberg correction (default 0.01)")
    p.add_argument("--no-correction", action="store_true",
                   help="judge each benchmark alone (no Benjamini-Hochberg across the suite); for study only")
    p.add_argument("--noise-floors", type=Path, metavar="JSON",
                   help="A/A noise floors from `pagedlm bench calibrate` (default: measured between each "
                        "side's own rounds when there are two or more)")
    p.add_argument("--allow-removed", action="store_true",
                   help="a benchmark in base but not in head does not fail the comparison")
    p.add_argument("--allow-different-machines", action="store_true",
                   help="compare runs from different CPUs or GPUs (for people who know why)")
    p.add_argument("--report", type=Path, metavar="MD", help="write the markdown report here")
    p.add_argument("--plots", type=Path, metavar="DIR", help="write PNG plots here (linked from --report)")
    p.add_argument("--json", action="store_true", help="print the verdicts as JSON instead of markdown")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap intervals (default 0)")


def add_compare(p: argparse.ArgumentParser) -> None:
    p.add_argument("base", type=Path, help="pytest-benchmark JSON file or folder of them (the baseline)")
    p.add_argument("head", type=Path, help="pytest-benchmark JSON file or folder of them (the change)")
    add_judgement(p)


def add_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", choices=SUITE_NAMES, default="scheduler",
                   help="which benchmarks: scheduler, prefix (CPU); kernels (CUDA); engine; all (default scheduler)")
    p.add_argument("--rounds", type=positive_int, default=1,
                   help="run the suite this many times, one JSON file per round (default 1)")
    p.add_argument("--out", type=Path, default=Path("bench-out"), help="folder for the JSON (default ./bench-out)")
    p.add_argument("--quick", action="store_true", help="shorter benchmarks (BENCH_QUICK=1), as the CI gate runs them")
    p.add_argument("pytest_args", nargs="*", metavar="-- PYTEST_ARGS", help="extra pytest arguments after --")


def add_gate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base", required=True, metavar="REV", help="git revision of the baseline, e.g. HEAD~1 or main")
    p.add_argument("--head", default=".", metavar="REV",
                   help='git revision of the change; "." (default) is the working tree as it is')
    p.add_argument("--suite", choices=SUITE_NAMES, default="scheduler", help="suite to run (default scheduler)")
    p.add_argument("--rounds", type=positive_int, default=5,
                   help="rounds per side, interleaved base/head/head/base (default 5: the fewest for which "
                        "a U test over rounds can reach p < 0.01)")
    p.add_argument("--quick", action="store_true", help="shorter benchmarks (BENCH_QUICK=1), as .ci/run gates")
    p.add_argument("--keep", type=Path, metavar="DIR", help="keep every round's JSON here")
    add_judgement(p)
    p.add_argument("pytest_args", nargs="*", metavar="-- PYTEST_ARGS", help="extra pytest arguments after --")


def add_calibrate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", choices=SUITE_NAMES, default="scheduler", help="suite to run (default scheduler)")
    p.add_argument("--runs", type=positive_int, default=20, help="rounds of the same tree (default 20)")
    p.add_argument("--rounds", type=positive_int, default=5, help="rounds per side of each A/A gate (default 5)")
    p.add_argument("--quick", action="store_true", help="shorter benchmarks (BENCH_QUICK=1)")
    p.add_argument("--gates", type=positive_int, default=200,
                   help="A/A gates drawn from the rounds (default 200)")
    p.add_argument("--from", dest="from_dir", type=Path, metavar="DIR",
                   help="reuse the JSON of an earlier calibration instead of running")
    p.add_argument("--out", type=Path, default=Path("bench-calibration"),
                   help="folder for the JSON and calibration.json (default ./bench-calibration)")
    p.add_argument("--threshold", type=fraction, default=0.05, metavar="PCT", help="gate threshold (default 5%%)")
    p.add_argument("--alpha", type=fraction, default=0.01, help="gate significance (default 0.01)")


def add_history(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="device folder under the results, e.g. h100 (default: every one)")
    p.add_argument("--results", type=Path, default=None, help="results folder (default bench/results)")
    p.add_argument("--plot", type=Path, metavar="PNG", help="write the trend chart here")
    p.add_argument("--report", type=Path, metavar="MD", help="write the table here as well")
