"""Handlers of `pagedlm bench compare / run / gate / calibrate / history`: argparse
namespaces in, exit status out. Errors the user can fix are one line on stderr, exit 2."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from typing import TYPE_CHECKING

from bench.harness.results import HarnessInputError

if TYPE_CHECKING:  # scipy and numpy load with the handlers, not with `--help`
    from bench.harness.compare import Comparison, Settings


def settings_of(args: argparse.Namespace) -> Settings:
    from bench.harness.compare import Settings
    try:
        return Settings(threshold=args.threshold, alpha=args.alpha, correction=not args.no_correction,
                        allow_removed=args.allow_removed, allow_different_machines=args.allow_different_machines,
                        seed=args.seed)
    except ValueError as exc:
        raise HarnessInputError(f"--{exc}") from exc


def noise_floors_of(path: Path | None) -> dict[str, float] | None:
    if path is None:
        return None
    try:
        doc = json.loads(path.read_text())
        floors = doc["noise_floors"]
        return {str(k): float(v) for k, v in floors.items()}
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise HarnessInputError(f"--noise-floors {path}: not a calibration file with 'noise_floors' ({exc})") from exc


def publish(c: Comparison, args: argparse.Namespace) -> int:
    """Print the verdicts (markdown or JSON), write --report and --plots; the exit status."""
    from bench.harness import markdown
    plots: list[Path] = []
    if args.plots is not None:
        from bench.harness.plots import distributions
        plots = distributions(c, args.plots)
    text = markdown.render(c, plots, args.report.parent if args.report else Path.cwd())
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(text)
    print(markdown.as_json(c) if args.json else text, end="" if not args.json else "\n")
    return c.exit_status


def compare(args: argparse.Namespace, prog: str = "pagedlm bench compare") -> int:
    from bench.harness.compare import compare_runs
    from bench.harness.results import load_run
    try:
        settings = settings_of(args)
        floors = noise_floors_of(args.noise_floors)
        comparison = compare_runs(load_run(args.base), load_run(args.head), settings, floors)
    except HarnessInputError as exc:
        return fail(exc, prog)
    return publish(comparison, args)


def fail(exc: Exception, prog: str) -> int:
    print(f"{prog}: error: {exc}", file=sys.stderr)
    return 2


def compare_main(argv: list[str] | None = None, prog: str = "pagedlm bench compare") -> int:
    """`compare` as a stand-alone program (ci/bench_gate.py); argparse errors exit 2."""
    from bench.harness.cli_args import EXIT_HELP, add_compare
    parser = argparse.ArgumentParser(prog=prog, description=COMPARE_HELP, epilog=EXIT_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_compare(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # 0 for --help, 2 for bad arguments
        return int(exc.code or 0)
    return compare(args, prog)


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
