"""Run one round of a suite through pytest-benchmark, in a given tree, with progress.

A round is one pytest process writing one JSON file with raw samples
(`--benchmark-save-data`). The tree's own benchmark files and conftest run, with
the caller's Python and PYTHONPATH at the tree, so a git worktree of another
revision is importable without installing it.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

from bench.harness.results import HarnessInputError
from bench.harness.suites import Suite

# pytest -v prints one line per test: "<nodeid> PASSED [ 50%]" (or SKIPPED, FAILED, ERROR)
RESULT_LINE = re.compile(r"^(\S+::\S+) (PASSED|SKIPPED|FAILED|ERROR|XFAIL|XPASS)\b")


class Progress:
    """A bar over rounds and benchmarks on a terminal (tqdm); one line per round in a log."""

    def __init__(self, rounds: int, label: str, stream: TextIO | None = None) -> None:
        self.rounds, self.label = rounds, label
        self.stream = stream or sys.stderr
        self.done_rounds = 0
        self.per_round: int | None = None
        self.bar = None
        if self.stream.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=None, desc=label, unit="bench", file=self.stream, leave=True)

    def start_round(self, what: str) -> None:
        self.t0, self.count, self.what = time.monotonic(), 0, what
        if self.bar is not None:
            self.bar.set_description(f"{self.label} round {self.done_rounds + 1}/{self.rounds} {what}")

    def benchmark_done(self, nodeid: str, outcome: str) -> None:
        self.count += 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(nodeid.rsplit("::", 1)[-1][:40])

    def end_round(self) -> None:
        self.done_rounds += 1
        if self.per_round is None and self.bar is not None:
            self.per_round = self.count
            self.bar.total = self.count * self.rounds
            self.bar.refresh()
        if self.bar is None:
            print(f"[{self.label}] round {self.done_rounds}/{self.rounds} {self.what}: {self.count} benchmark(s) "
                  f"in {time.monotonic() - self.t0:.1f} s", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def pytest_command(suite: Suite, tree: Path, json_path: Path, python: str, extra: list[str]) -> list[str]:
    files = [str(p) for p in suite.paths(tree)]
    return [python, "-m", "pytest", *files, *suite.pytest_args, "-v", "-p", "no:cacheprovider",
            "-p", "no:xdist",
            "--benchmark-only", "--benchmark-save-data", f"--benchmark-json={json_path}", *extra]


def run_round(suite: Suite, tree: Path, json_path: Path, progress: Progress | None = None, *,
              python: str = sys.executable, quick: bool = False, extra: list[str] | None = None,
              env: dict[str, str] | None = None) -> Path:
    """One pytest-benchmark run of `suite` in `tree` into `json_path` (its log beside it).
    HarnessInputError when pytest fails or writes no JSON: the message names the log."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    log_path = json_path.with_suffix(".log")
    # A benchmark runs as written: no inherited pytest options, and none of the markers
    # of an xdist worker (run from inside `pytest -n`, pytest-benchmark would see xdist
    # and disable itself: "Can't have both --benchmark-only and --benchmark-disable").
    run_env = {k: v for k, v in os.environ.items()
               if k != "PYTEST_ADDOPTS" and not k.startswith("PYTEST_XDIST")}
    run_env.update(env or {}, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    if quick:
        run_env["BENCH_QUICK"] = "1"
    cmd = pytest_command(suite, tree, json_path.resolve(), python, extra or [])
    with open(log_path, "w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, cwd=tree, env=run_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, bufsize=1)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                match = RESULT_LINE.match(line)
                if match and progress is not None:
                    progress.benchmark_done(match.group(1), match.group(2))
            rc = proc.wait()
        finally:
            if proc.poll() is None:  # interrupted: stop pytest before the caller cleans up
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    if rc != 0 or not json_path.exists():
        raise HarnessInputError(f"suite {suite.name!r} failed in {tree} (pytest exit {rc}); log: {log_path}")
    return json_path
