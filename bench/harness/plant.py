"""Plant a known slowdown into real benchmark JSON, to see the gate catch it.

    python3 -m bench.harness.plant IN OUT --benchmark NAME --factor 1.2

Copies a pytest-benchmark file (or every *.json of a folder) from IN to OUT with the
raw samples of the benchmarks whose full name contains NAME multiplied by FACTOR;
commit_info gains "planted" so the result can never pass for a real run.
Exit status: 0 written, 2 bad input.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repo root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.harness.results import HarnessInputError, files_of  # noqa: E402


def plant_doc(doc: dict, needle: str, factor: float) -> int:
    """Scale the samples of matching benchmarks in place; how many matched."""
    hit = 0
    for bench in doc.get("benchmarks", []):
        if needle not in (bench.get("fullname") or bench.get("name") or ""):
            continue
        hit += 1
        extra, stats = bench.get("extra_info") or {}, bench.get("stats") or {}
        for holder, key in ((extra, "samples_s"), (stats, "data")):
            if holder.get(key):
                holder[key] = [x * factor for x in holder[key]]
        if "median" in stats:
            stats["median"] *= factor
    doc.setdefault("commit_info", {})["planted"] = f"{needle} x{factor}"
    return hit


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.harness.plant", description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path)
    p.add_argument("dst", type=Path)
    p.add_argument("--benchmark", required=True, help="substring of the full benchmark name")
    p.add_argument("--factor", type=float, required=True, help="multiply its samples by this (1.2 = 20%% slower)")
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        if not args.factor > 0:
            raise HarnessInputError(f"--factor must be positive, got {args.factor}")
        files = files_of(args.src)
        hits = 0
        for f in files:
            doc = json.loads(f.read_text())
            hits += plant_doc(doc, args.benchmark, args.factor)
            target = args.dst / f.relative_to(args.src) if args.src.is_dir() else args.dst
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(doc))
        if not hits:
            raise HarnessInputError(f"--benchmark {args.benchmark!r} matches no benchmark in {args.src}")
    except (HarnessInputError, OSError, json.JSONDecodeError) as exc:
        print(f"bench.harness.plant: error: {exc}", file=sys.stderr)
        return 2
    print(f"planted x{args.factor} into {hits} benchmark record(s) of {len(files)} file(s) -> {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
