"""Run benchmarks of two git refs interleaved on this machine, then gate HEAD on BASE.

    python3 ci/bench_ab.py BASE_REF HEAD_REF [--rounds 3] [--out DIR] -- PYTEST_ARGS...
    e.g. python3 ci/bench_ab.py main HEAD -- bench/bench_kernels_decode.py -k B64-L4096

Each ref is checked out in its own git worktree (HEAD_REF "." uses the working
tree as it is). Rounds alternate the order (base, head / head, base, ...) so
drift in clocks or temperature falls on both sides; the samples of all rounds
are pooled per benchmark and judged by ci/bench_gate.py (same flags, same exit
status: 0 no regression, 1 regression, 2 bad input or a failed run).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `ci` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ci import bench_gate  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def checkout(ref: str, where: Path) -> Path:
    if ref == ".":
        return REPO
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(where), ref], check=True,
                   capture_output=True, text=True)
    return where


def run_side(tree: Path, pytest_args: list[str], json_path: Path) -> None:
    cmd = [sys.executable, "-m", "pytest", *pytest_args, "-q", "-p", "no:cacheprovider",
           "--benchmark-save-data", f"--benchmark-json={json_path}"]  # raw samples for the gate
    print(f"[{tree.name}] {' '.join(cmd[1:])}", flush=True)
    res = subprocess.run(cmd, cwd=tree)
    if res.returncode not in (0, 5) or not json_path.exists():
        raise bench_gate.GateInputError(f"benchmark run in {tree} failed (exit {res.returncode})")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    pytest_args = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="Arguments after -- go to pytest. Exit status as ci/bench_gate.py.")
    parser.add_argument("base_ref")
    parser.add_argument("head_ref", help='a git ref, or "." for the working tree as it is')
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per side (default 3)")
    parser.add_argument("--out", type=Path, help="keep every round's JSON here (default: a temporary folder)")
    parser.add_argument("--threshold", type=float, default=0.05)
    parser.add_argument("--alpha", type=float, default=0.01)
    try:
        args = parser.parse_args(own)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.rounds < 1 or not pytest_args:
        print("bench_ab: need --rounds >= 1 and pytest arguments after --", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bench_ab_"))
    out = args.out or work / "json"
    trees: dict[str, Path] = {}
    try:
        for side, ref in (("base", args.base_ref), ("head", args.head_ref)):
            (out / side).mkdir(parents=True, exist_ok=True)
            trees[side] = checkout(ref, work / side)
        for r in range(args.rounds):
            order = ("base", "head") if r % 2 == 0 else ("head", "base")
            for side in order:
                run_side(trees[side], pytest_args, out / side / f"round{r}.json")
        base, head = bench_gate.load(out / "base"), bench_gate.load(out / "head")
        verdicts = bench_gate.compare(base, head, args.threshold, args.alpha)
        if not verdicts:
            raise bench_gate.GateInputError("the two runs share no benchmark names")
    except (bench_gate.GateInputError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", None) or exc
        print(f"bench_ab: {detail}", file=sys.stderr)
        return 2
    finally:
        for side, tree in trees.items():
            if tree != REPO:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                               capture_output=True)
        shutil.rmtree(work, ignore_errors=True)  # --out, when given, lies elsewhere
    print(bench_gate.markdown(verdicts, sorted(base.keys() - head.keys()), sorted(head.keys() - base.keys()),
                              args.threshold, args.alpha))
    return 1 if any(v.regressed for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
