"""A/B benchmark gate: does HEAD run slower than BASE?

    python3 ci/bench_gate.py BASE HEAD [--threshold 0.05] [--alpha 0.01] [--markdown FILE]

BASE and HEAD are pytest-benchmark JSON files, or folders of them. Each benchmark
needs its raw samples: `extra_info["samples_s"]` (what bench/ records: CUDA-event
times) or `stats["data"]` (from --benchmark-save-data). A benchmark regresses when
its median slowdown exceeds the threshold AND a one-sided Mann-Whitney U test
(HEAD samples greater than BASE samples) gives p < alpha: a big change in noisy
figures and a tiny but certain one both pass. Prints a markdown table.
Exit status: 0 no regression, 1 regression, 2 bad input.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from scipy.stats import mannwhitneyu

MIN_SAMPLES = 3


class GateInputError(ValueError):
    """Input the gate cannot judge: unreadable files, missing samples."""


@dataclass(frozen=True)
class Verdict:
    name: str
    base_median: float
    head_median: float
    p_slower: float
    p_faster: float
    regressed: bool
    improved: bool

    @property
    def change(self) -> float:
        return self.head_median / self.base_median - 1


def samples_of(bench: dict) -> list[float]:
    raw = bench.get("extra_info", {}).get("samples_s") or bench.get("stats", {}).get("data")
    if not raw:
        raise GateInputError(f"benchmark {bench.get('fullname', bench.get('name'))!r} has no raw samples "
                             "(extra_info.samples_s, or stats.data from --benchmark-save-data)")
    if len(raw) < MIN_SAMPLES:
        raise GateInputError(f"benchmark {bench.get('fullname')!r} has {len(raw)} samples; need >= {MIN_SAMPLES}")
    return [float(x) for x in raw]


def load(path: Path) -> dict[str, list[float]]:
    """{benchmark fullname: samples} from a JSON file or every *.json in a folder."""
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise GateInputError(f"{path}: no JSON files")
    out: dict[str, list[float]] = {}
    for f in files:
        try:
            doc = json.loads(f.read_text())
            benches = doc["benchmarks"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
            raise GateInputError(f"{f}: not a readable pytest-benchmark JSON file ({exc})") from exc
        for b in benches:
            out.setdefault(b.get("fullname") or b["name"], []).extend(samples_of(b))
    return out


def judge(name: str, base: list[float], head: list[float], threshold: float, alpha: float) -> Verdict:
    b, h = statistics.median(base), statistics.median(head)
    if b <= 0:
        raise GateInputError(f"benchmark {name!r}: base median {b} is not positive")
    p_slower = float(mannwhitneyu(head, base, alternative="greater").pvalue)
    p_faster = float(mannwhitneyu(head, base, alternative="less").pvalue)
    change = h / b - 1
    return Verdict(name, b, h, p_slower, p_faster, regressed=change > threshold and p_slower < alpha,
                   improved=change < -threshold and p_faster < alpha)


def compare(base: dict[str, list[float]], head: dict[str, list[float]], threshold: float = 0.05,
            alpha: float = 0.01) -> list[Verdict]:
    return [judge(n, base[n], head[n], threshold, alpha) for n in sorted(base.keys() & head.keys())]


def _time(s: float) -> str:
    return f"{s * 1e3:.3f} ms" if s >= 1e-3 else f"{s * 1e6:.1f} µs"


def markdown(verdicts: list[Verdict], only_base: list[str], only_head: list[str], threshold: float,
             alpha: float) -> str:
    lines = [f"Regression: median slowdown > {threshold:.0%} and one-sided Mann-Whitney U p < {alpha:g}.", "",
             "| benchmark | base median | head median | change | p (slower) | verdict |", "|---|---|---|---|---|---|"]
    for v in verdicts:
        verdict = "**REGRESSION**" if v.regressed else "faster" if v.improved else "ok"
        lines.append(f"| {v.name} | {_time(v.base_median)} | {_time(v.head_median)} | {v.change:+.1%} | "
                     f"{v.p_slower:.2g} | {verdict} |")
    for name in only_base:
        lines.append(f"| {name} | | | | | missing in head |")
    for name in only_head:
        lines.append(f"| {name} | | | | | new in head |")
    bad = sum(v.regressed for v in verdicts)
    lines += ["", f"{bad} regression(s) in {len(verdicts)} compared benchmark(s)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="Exit status: 0 no regression, 1 regression, 2 bad input.")
    parser.add_argument("base", type=Path, help="pytest-benchmark JSON file or folder (the baseline)")
    parser.add_argument("head", type=Path, help="pytest-benchmark JSON file or folder (the change)")
    parser.add_argument("--threshold", type=float, default=0.05, help="median slowdown that counts (default 0.05)")
    parser.add_argument("--alpha", type=float, default=0.01, help="significance level (default 0.01)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad arguments, 0 on --help
        return int(exc.code or 0)
    try:
        if not 0 <= args.threshold < 10:
            raise GateInputError(f"--threshold must be in [0, 10), got {args.threshold}")
        if not 0 < args.alpha < 1:
            raise GateInputError(f"--alpha must be in (0, 1), got {args.alpha}")
        base, head = load(args.base), load(args.head)
        verdicts = compare(base, head, args.threshold, args.alpha)
        if not verdicts:
            raise GateInputError("base and head share no benchmark names")
    except GateInputError as exc:
        print(f"bench_gate: {exc}", file=sys.stderr)
        return 2
    text = markdown(verdicts, sorted(base.keys() - head.keys()), sorted(head.keys() - base.keys()),
                    args.threshold, args.alpha)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 1 if any(v.regressed for v in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
