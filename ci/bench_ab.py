"""Run the benchmarks of two git revisions interleaved on this machine, then gate HEAD on BASE.

    python3 ci/bench_ab.py BASE_REF HEAD_REF [--suite kernels] [--rounds 5] [--keep DIR] [-- PYTEST_ARGS...]
    e.g. python3 ci/bench_ab.py main . --suite kernels -- -k B64-L4096

The same as `pagedlm bench gate --base BASE_REF --head HEAD_REF` (bench/harness/gate.py),
for machines where the package is not installed; HEAD_REF "." is the working tree.
Exit status: 0 no regression, 1 regression, 2 bad input or a failed run, 130 interrupted.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import cli_args, commands  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    own, rest = (argv[:argv.index("--")], argv[argv.index("--"):]) if "--" in argv else (argv, [])
    if len(own) >= 2 and not own[0].startswith("-") and not own[1].startswith("-"):
        own = ["--base", own[0], "--head", own[1], *own[2:]]   # the old positional form
    parser = argparse.ArgumentParser(prog="ci/bench_ab.py", description=__doc__.splitlines()[0],
                                     epilog=cli_args.EXIT_HELP)
    cli_args.add_gate(parser)
    try:
        args = parser.parse_args(own + rest)
    except SystemExit as exc:
        return int(exc.code or 0)
    return commands.gate(args)


if __name__ == "__main__":
    sys.exit(main())
