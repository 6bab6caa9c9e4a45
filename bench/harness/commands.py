"""Handlers of `pagedlm bench compare / run / gate / calibrate / history`: argparse
namespaces in, exit status out. Errors the user can fix are one line on stderr, exit 2."""
from __future__ import annotations

import argparse
import json
import os
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
        from bench.harness import figures
        from bench.harness import plots as charts
        try:
            plots = charts.distributions(c, args.plots)
            records = [{"fullname": s.name, "extra_info": s.extra_info} for s in c.head.benchmarks.values()]
            plots += figures.suite_figures(records, args.plots, c.head.machine_info, label="head: ")
        except ValueError as exc:
            raise HarnessInputError(str(exc)) from exc
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
        return publish(comparison, args)
    except HarnessInputError as exc:
        return fail(exc, prog)


def fail(exc: Exception, prog: str) -> int:
    print(f"{prog}: error: {exc}", file=sys.stderr)
    return 2


def compare_main(argv: list[str] | None = None, prog: str = "pagedlm bench compare") -> int:
    """`compare` as a stand-alone program (ci/bench_gate.py); argparse errors exit 2."""
    from bench.harness.cli_args import COMPARE_HELP, EXIT_HELP, add_compare
    parser = argparse.ArgumentParser(prog=prog, description=COMPARE_HELP, epilog=EXIT_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_compare(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # 0 for --help, 2 for bad arguments
        return int(exc.code or 0)
    return compare(args, prog)




def source_tree() -> Path:
    """The checkout this bench package lives in (its benchmarks and conftest)."""
    tree = Path(__file__).resolve().parents[2]
    if not (tree / "bench" / "conftest.py").is_file():
        raise HarnessInputError(f"{tree} is not a pagedlm checkout (no bench/conftest.py): run from a source tree")
    return tree


def probe_cuda() -> bool:
    import torch
    return bool(torch.cuda.is_available())


def run(args: argparse.Namespace) -> int:
    """`pagedlm bench run`: each suite --rounds times into OUT/<suite>/roundN.json, and
    OUT/manifest.json saying what ran and what was skipped, and why."""
    from bench.harness import runner, suites
    try:
        tree = source_tree()
        chosen = suites.get(args.suite)
        cuda = probe_cuda() if any(s.needs_cuda for s in chosen) else None
        manifest: dict = {"suite": args.suite, "rounds": args.rounds, "quick": args.quick, "suites": {}}
        todo = []
        for suite in chosen:
            reason = suites.skip_reason(suite, tree, cuda)
            entry = {"description": suite.description, "files": [str(p) for p in suite.paths(tree)]}
            if reason:
                entry.update(status="skipped", reason=reason)
                print(f"pagedlm bench run: suite {suite.name!r} skipped: {reason}", file=sys.stderr)
            else:
                entry.update(status="ran", results=[])
                todo.append(suite)
            manifest["suites"][suite.name] = entry
        progress = runner.Progress(args.rounds * len(todo), "bench run") if todo else None
        for suite in todo:
            folder = args.out / suite.name
            for old in list(folder.glob("round*.json")) + list(folder.glob("round*.log")) if folder.is_dir() else []:
                old.unlink()  # a compare of this folder must not mix in an older run's rounds
            for r in range(args.rounds):
                progress.start_round(suite.name)
                path = runner.run_round(suite, tree, folder / f"round{r}.json", progress, quick=args.quick,
                                        extra=list(args.pytest_args))
                progress.end_round()
                manifest["suites"][suite.name]["results"].append(str(path.relative_to(args.out)))
        if progress is not None:
            progress.close()
    except (HarnessInputError, ValueError) as exc:
        return fail(exc, "pagedlm bench run")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    ran = [n for n, e in manifest["suites"].items() if e["status"] == "ran"]
    print(f"pagedlm bench run: {len(ran)} suite(s) ran ({', '.join(ran) or 'none'}) x {args.rounds} round(s) "
          f"-> {args.out}")
    return 0


def gate(args: argparse.Namespace) -> int:
    """`pagedlm bench gate` (bench/harness/gate.py)."""
    from bench.harness.gate import gate as run_gate
    try:
        repo = source_tree()
    except HarnessInputError as exc:
        return fail(exc, "pagedlm bench gate")
    return run_gate(args, repo)


def calibrate(args: argparse.Namespace) -> int:
    """`pagedlm bench calibrate`: run the suite --runs times (or reuse --from), then A/A."""
    from bench.harness import calibrate as cal
    from bench.harness import runner, suites
    prog = "pagedlm bench calibrate"
    try:
        if args.from_dir is None:
            tree = source_tree()
            [suite] = suites.get(args.suite) if args.suite != "all" else [None]
            if suite is None:
                raise HarnessInputError("--suite all cannot be calibrated as one gate: pick one suite")
            reason = suites.skip_reason(suite, tree, probe_cuda() if suite.needs_cuda else None)
            if reason:
                raise HarnessInputError(f"suite {suite.name!r} cannot run here: {reason}")
            progress = runner.Progress(args.runs, "bench calibrate")
            for r in range(args.runs):
                progress.start_round(suite.name)
                runner.run_round(suite, tree, args.out / "rounds" / f"round{r}.json", progress, quick=args.quick)
                progress.end_round()
            progress.close()
        result = cal.calibrate(cal.rounds_of(args.from_dir or args.out / "rounds"), args.rounds, args.threshold,
                               args.alpha, gates=args.gates)
    except (HarnessInputError, ValueError) as exc:
        return fail(exc, prog)
    js, md = cal.write(result, args.out)
    print(cal.markdown(result), end="")
    print(f"{prog}: wrote {js} (use it with --noise-floors) and {md}", file=sys.stderr)
    return 0


def history(args: argparse.Namespace) -> int:
    """`pagedlm bench history`: a table per device (printed, and --report), --plot the trend."""
    from bench.harness import history as hist
    prog = "pagedlm bench history"
    try:
        results = args.results or source_tree() / "bench" / "results"
        by_device = {}
        texts = []
        for device, folder in hist.devices(results, args.device).items():
            points, skipped = hist.collect(folder)
            by_device[device] = points
            texts.append(hist.table(device, points, skipped))
        if not any(by_device.values()):
            raise HarnessInputError(f"{results}: no pytest-benchmark results for "
                                    f"{args.device or 'any device'}")
        text = "\n".join(texts)
        if args.plot is not None:
            pngs = [hist.trend(by_device, args.plot)]
            pngs += [p for device, points in by_device.items() if points
                     for p in points[-1].figures(args.plot.parent, device)]
            base = (args.report or args.plot).parent
            text += "".join(f"\n![{png.stem}]({os.path.relpath(png, base)})\n" for png in pngs)
    except (HarnessInputError, ValueError) as exc:
        return fail(exc, prog)
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(text)
    print(text, end="")
    return 0
