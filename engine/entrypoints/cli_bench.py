"""`pagedlm bench run / compare / gate / calibrate / history`: the benchmark harness.

The work lives in the `bench` package (bench/harness); this module only builds the
parsers (standard library, so `pagedlm --help` stays instant) and hands over.
"""
from __future__ import annotations

import argparse
from typing import Any, Callable

DESCRIPTION = """Benchmarks you can act on: run suites, compare two runs, gate a change.

A regression is a median slowdown past --threshold AND a one-sided Mann-Whitney U
test significant at --alpha after a Benjamini-Hochberg correction across the
suite; both runs must come from one machine and the same workload per benchmark.
"""

EXAMPLES = """examples:
  pagedlm bench run --suite scheduler --rounds 3 --out base/
  pagedlm bench compare base/ head/ --threshold 5% --report report.md --plots plots/
  pagedlm bench gate --base main --suite scheduler --rounds 5
  pagedlm bench calibrate --suite scheduler --runs 20
  pagedlm bench history --device h100 --plot trend.png

exit status: 0 no regression, 1 regression (or a benchmark removed), 2 bad input or a failed run
"""

COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("run", "run a suite through pytest-benchmark (raw samples, machine, fingerprints)", "add_run"),
    ("compare", "compare two runs: verdict per benchmark, exit 1 on a regression", "add_compare"),
    ("gate", "base and head in git worktrees, interleaved rounds, then compare", "add_gate"),
    ("calibrate", "A/A: the same tree against itself; false-alarm rate and noise floors", "add_calibrate"),
    ("history", "headline figures across the committed results, as a table and a trend chart", "add_history"),
)

DETAILS = {
    "run": "Runs each chosen suite --rounds times, one pytest process and one JSON file per round\n"
           "(OUT/<suite>/roundN.json), and OUT/manifest.json with what ran and what was skipped and why\n"
           "(a GPU suite without CUDA, a suite without benchmark files yet). Suites: scheduler and\n"
           "prefix (CPU), kernels (CUDA), engine, all. Arguments after -- go to pytest.",
    "gate": "Checks out --base (and --head unless it is the working tree) in temporary git worktrees,\n"
            "runs the suite in rounds ordered base, head, head, base, ... with this Python and PYTHONPATH\n"
            "at each tree, pools each side's samples and compares them. The worktrees are removed even\n"
            "on Ctrl-C. A base that lacks the suite's files is skipped with a message (exit 0).",
    "calibrate": "Runs the suite --runs times on this tree, then judges every split of those rounds into\n"
                 "an A/A gate (--rounds per side): the false-alarm rate per benchmark and for the suite at\n"
                 "--threshold and --alpha, and each benchmark's noise floor (its A/A spread), written to\n"
                 "OUT/calibration.json for `compare --noise-floors`.",
}

EXITS = {
    "run": "Exit status: 0 every suite ran or was skipped with its reason, 2 a run failed (its log is named).",
    "history": "Exit status: 0 shown, 2 no results or unreadable ones.",
    "calibrate": "Exit status: 0 calibrated, 2 a run failed or too few runs.",
}


def _handler(name: str) -> Callable[[argparse.Namespace], int]:
    def handle(args: argparse.Namespace) -> int:
        from bench.harness import commands  # scipy, numpy: only when a command runs
        return getattr(commands, name)(args)
    return handle


def _missing(reason: str) -> int:
    import sys
    print(f"pagedlm bench: the bench package is not importable here ({reason}); run from a pagedlm "
          "checkout, or install pagedlm with its bench package", file=sys.stderr)
    return 2


def register(subparsers: Any) -> None:
    """Add the `bench` subcommand (and its own subcommands) to the `pagedlm` parser."""
    try:
        from bench.harness import cli_args
    except ImportError as exc:  # an install without the bench package: say so when asked
        reason = str(exc)
        p = subparsers.add_parser("bench", help="benchmark harness (needs the bench package)")
        p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
        p.set_defaults(handler=lambda args: _missing(reason))
        return
    p = subparsers.add_parser("bench", help="benchmark suites, comparisons and the regression gate",
                              description=DESCRIPTION, epilog=EXAMPLES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="bench_command", metavar="<bench command>", required=True)
    for name, summary, adder in COMMANDS:
        details = cli_args.COMPARE_HELP if name == "compare" else DETAILS.get(name, "")
        cp = sub.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".\n\n"
                            + details, epilog=EXITS.get(name, cli_args.EXIT_HELP),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        getattr(cli_args, adder)(cp)
        cp.set_defaults(handler=_handler(name))
