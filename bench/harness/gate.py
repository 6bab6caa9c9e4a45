"""`pagedlm bench gate`: base and head on this machine, interleaved, then compared.

Each revision is checked out in its own temporary git worktree ("." for the head
uses the working tree as it is). Rounds alternate the order -- base, head, head,
base, ... -- so a drift in clocks, temperature or a neighbour's load falls on both
sides; each side's rounds are pooled and judged by bench.harness.compare. Both
sides run with this Python and PYTHONPATH at their own tree. The worktrees are
removed on every way out, Ctrl-C and SIGTERM included.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from bench.harness import runner, suites
from bench.harness.results import HarnessInputError

PROG = "pagedlm bench gate"


def git(repo: Path, *args: str) -> str:
    res = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise HarnessInputError(f"git {' '.join(args)}: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode}")
    return res.stdout.strip()


def resolve(repo: Path, rev: str) -> str:
    """The commit a revision names; HarnessInputError names an unknown one."""
    try:
        return git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except HarnessInputError:
        raise HarnessInputError(f"--base/--head {rev!r} is not a commit in {repo}") from None


@contextmanager
def worktrees(repo: Path, revs: dict[str, str]) -> Iterator[dict[str, Path]]:
    """{side: tree} for {side: commit or "."}; removed again however the block ends."""
    work = Path(tempfile.mkdtemp(prefix="pagedlm_gate_"))
    made: list[Path] = []
    trees: dict[str, Path] = {}
    try:
        for side, rev in revs.items():
            if rev == ".":
                trees[side] = repo
                continue
            where = work / side
            git(repo, "worktree", "add", "--detach", str(where), rev)
            made.append(where)
            trees[side] = where
        yield trees
    finally:
        for where in made:
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(where)], capture_output=True)
        subprocess.run(["git", "-C", str(repo), "worktree", "prune"], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a CI runner's cancel) unwinds like Ctrl-C, so the cleanup runs."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def check_importable(tree: Path, python: str) -> None:
    """Both sides must import their own tree's packages, not the installed checkout's."""
    code = ("import importlib.util as u; "  # bench is a namespace package: no origin, a search path
            "print(*(list(u.find_spec(m).submodule_search_locations)[0] for m in ('engine', 'bench')), sep='\\n')")
    res = subprocess.run([python, "-c", code], cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
                         capture_output=True, text=True)
    origins = res.stdout.split()
    if res.returncode != 0 or not all(Path(o).resolve().is_relative_to(tree.resolve()) for o in origins):
        raise HarnessInputError(f"{tree}: its packages do not import from the tree itself ({origins or res.stderr})")


def order(round_index: int) -> tuple[str, str]:
    """base, head / head, base / base, head ...: each side leads every other round."""
    return ("base", "head") if round_index % 2 == 0 else ("head", "base")


def gate(args: argparse.Namespace, repo: Path) -> int:
    """Run the gate; the comparison's exit status, 0 when skipped, 2 on bad input, 130 interrupted."""
    from bench.harness import commands
    from bench.harness.compare import compare_runs
    from bench.harness.results import load_run
    if args.suite == "all":
        return commands.fail(HarnessInputError("--suite all is not gated: pick one suite"), PROG)
    suite = suites.get(args.suite)[0]
    try:
        settings = commands.settings_of(args)
        floors = commands.noise_floors_of(args.noise_floors)
        revs = {"base": resolve(repo, args.base), "head": "." if args.head == "." else resolve(repo, args.head)}
        if suite.needs_cuda and not commands.probe_cuda():
            print(f"{PROG}: skipped: suite {suite.name!r} needs a CUDA device", file=sys.stderr)
            return 0
        out = args.keep or Path(tempfile.mkdtemp(prefix="pagedlm_gate_json_"))
        with sigterm_as_interrupt(), worktrees(repo, revs) as trees:
            if not suite.paths(trees["base"]):
                print(f"{PROG}: skipped: base {args.base} ({revs['base'][:10]}) has no benchmark files of suite "
                      f"{suite.name!r} ({', '.join(suite.files)})", file=sys.stderr)
                return 0
            for tree in trees.values():
                check_importable(tree, sys.executable)
            progress = runner.Progress(2 * args.rounds, "bench gate")
            for r in range(args.rounds):
                for side in order(r):
                    progress.start_round(side)
                    runner.run_round(suite, trees[side], out / side / f"round{r}.json", progress, quick=args.quick,
                                     extra=list(args.pytest_args))
                    progress.end_round()
            progress.close()
        comparison = compare_runs(load_run(out / "base"), load_run(out / "head"), settings, floors)
        return commands.publish(comparison, args)
    except HarnessInputError as exc:
        return commands.fail(exc, PROG)
    except KeyboardInterrupt:
        print(f"\n{PROG}: interrupted; worktrees removed", file=sys.stderr)
        return 130
    finally:
        if not args.keep and "out" in locals():
            shutil.rmtree(out, ignore_errors=True)
