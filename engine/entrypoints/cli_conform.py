"""`pagedlm conform`: run the conformance suite and write its matrix.

Builds `python -m pytest conformance ...` with the Hypothesis profile, the GPU or
CPU subset, pytest-xdist workers where installed, JUnit XML and the matrix plugin
(bench/harness/matrix.py), and prints the matrix when it ends.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

PROFILES = {
    "ci": "derandomised, 30 examples a property: what `make test` and CI run (minutes on 2 CPU cores)",
    "dev": "random draws, 60 examples a property: about twice ci",
    "gpu": "derandomised, 20 examples at full sizes on a CUDA device (a few minutes on an H100, mostly JIT)",
    "nightly": "random draws, 1000 examples a property: some 30x ci; for a nightly machine",
}

EPILOG = "profiles (HYPOTHESIS_PROFILE, conformance/conftest.py):\n" + "\n".join(
    f"  {name:8s} {text}" for name, text in PROFILES.items()) + """

examples:
  pagedlm conform                          # the CPU suite as CI runs it; matrix in ./conformance-report
  pagedlm conform --gpu --report out/      # the GPU subset (kernels at full size, gpu-marked tests)
  pagedlm conform -- -k decode -x          # arguments after -- go to pytest

exit status: pytest's (0 all passed, 1 failures, 2 interrupted or usage, 5 nothing collected)
"""


def register(subparsers: Any) -> None:
    """Add the `conform` subcommand to the `pagedlm` parser."""
    p = subparsers.add_parser(
        "conform", help="run the conformance suite and write its matrix (markdown, JSON, JUnit XML)",
        description="Run the conformance suite (every engine and kernel piece against its oracle) and write "
                    "the conformance matrix: rows components, columns backend x dtype x KV dtype x block size, "
                    "pass/fail/skip counts, as REPORT/matrix.md and matrix.json beside pytest's JUnit XML "
                    "(REPORT/conformance.xml).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", action="store_true",
                   help="the GPU subset (-m 'gpu or kernel', profile gpu by default) instead of the CPU suite")
    p.add_argument("--profile", choices=sorted(PROFILES), default=None,
                   help="Hypothesis profile (default: ci, or gpu with --gpu)")
    p.add_argument("--report", type=Path, default=Path("conformance-report"),
                   help="folder for matrix.md, matrix.json and conformance.xml (default ./conformance-report)")
    p.add_argument("--workers", default="auto", help="pytest-xdist workers, or 0 for none (default auto)")
    p.add_argument("pytest_args", nargs="*", metavar="-- PYTEST_ARGS", help="extra pytest arguments after --")
    p.set_defaults(handler=run)


def command(args: argparse.Namespace, python: str = sys.executable) -> tuple[list[str], dict[str, str]]:
    """The pytest command line and environment `pagedlm conform` runs."""
    profile = args.profile or ("gpu" if args.gpu else "ci")
    cmd = [python, "-m", "pytest", "conformance", "-m", "gpu or kernel" if args.gpu else "not gpu", "-q",
           "-p", "no:cacheprovider", "-p", "bench.harness.matrix", f"--matrix-dir={args.report}",
           f"--junitxml={args.report / 'conformance.xml'}"]
    if args.workers != "0" and importlib.util.find_spec("xdist") is not None:
        cmd += ["-n", args.workers]
    cmd += list(args.pytest_args)
    return cmd, {**os.environ, "HYPOTHESIS_PROFILE": profile}


def source_root() -> Path:
    """The checkout whose conformance/ this runs (the one this engine package lives in)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "conformance").is_dir() else Path.cwd()


def run(args: argparse.Namespace) -> int:
    args.report = args.report.resolve()
    cmd, env = command(args)
    args.report.mkdir(parents=True, exist_ok=True)
    try:
        rc = subprocess.run(cmd, env=env, cwd=source_root()).returncode
    except KeyboardInterrupt:
        return 2
    matrix = args.report / "matrix.md"
    if matrix.is_file():
        print("\n" + matrix.read_text(), end="")
    return rc
