"""The comparison as a person reads it: the verdict table first, regressions on top."""
from __future__ import annotations

import json
import os
from pathlib import Path

from bench.harness.compare import Comparison, Verdict

MARK = {"slower": "**SLOWER**", "removed": "**REMOVED**", "inconclusive": "inconclusive", "too noisy": "too noisy",
        "faster": "faster", "same": "same", "new": "new"}


def fmt_time(s: float | None) -> str:
    if s is None:
        return "–"
    if s >= 1:
        return f"{s:.3f} s"
    return f"{s * 1e3:.3f} ms" if s >= 1e-3 else f"{s * 1e6:.1f} µs"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:+.1%}"


def _p(x: float | None) -> str:
    return "–" if x is None else f"{x:.3g}"


def _row(v: Verdict) -> str:
    ci = "" if v.ci is None else f" [{v.ci[0]:+.1%}, {v.ci[1]:+.1%}]"
    floor = "–" if v.noise_floor is None else f"{v.noise_floor:.1%}"
    return (f"| {MARK[v.verdict]} | `{v.name}` | {fmt_time(v.base_median)} | {fmt_time(v.head_median)} | "
            f"{_pct(v.change)}{ci} | {_p(v.p_slower)} / {_p(v.q_slower)} | {floor} | {v.n_base} / {v.n_head} {v.unit} | "
            f"{v.note} |")


def headline(c: Comparison) -> str:
    bad = c.regressions
    verdict = "FAIL" if bad else "PASS"
    names = ", ".join(f"`{v.name}`" for v in bad)
    return (f"**{verdict}**: {len(bad)} regression(s) in {len(c.verdicts)} benchmark(s)"
            + (f": {names}" if bad else "") + ".")


def render(c: Comparison, plots: list[Path] | None = None, relative_to: Path | None = None) -> str:
    s = c.settings
    correction = "Benjamini-Hochberg across the suite" if s.correction else "no suite correction"
    lines = [headline(c), "",
             f"Regression: median slower by more than {s.threshold:.0%} AND one-sided Mann-Whitney U "
             f"significant at {s.alpha:g} after {correction} (over round medians where there are rounds "
             f"enough to reach it, else over samples). Change: head/base − 1 of the pooled medians "
             f"[bootstrap 95 % interval over rounds and samples].", "",
             "| verdict | benchmark | base median | head median | change [95 % CI] | p / q (slower) | "
             "A/A noise floor | U test over | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(v) for v in c.verdicts]
    lines += ["", f"Base: `{c.base.source}` ({_commits(c.base.commits)}); head: `{c.head.source}` "
              f"({_commits(c.head.commits)}); machine: {_machine(c.base.machine)}."]
    lines += [f"- note: {n}" for n in c.notes]
    for png in plots or []:
        rel = os.path.relpath(png, relative_to) if relative_to else str(png)
        lines += ["", f"![{png.stem}]({rel})"]
    return "\n".join(lines) + "\n"


def _commits(commits: list[str]) -> str:
    return ", ".join(c[:10] for c in commits) or "commit not recorded"


def _machine(m: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in m.items() if v is not None) or "not recorded"


def as_json(c: Comparison) -> str:
    """The same verdicts for machines (`--json`)."""
    doc = {"status": "fail" if c.regressions else "pass", "exit_status": c.exit_status,
           "threshold": c.settings.threshold, "alpha": c.settings.alpha, "correction": c.settings.correction,
           "notes": list(c.notes),
           "benchmarks": [{"name": v.name, "verdict": v.verdict, "fails": v.fails, "base_median_s": v.base_median,
                           "head_median_s": v.head_median, "change": v.change, "ci95": v.ci,
                           "p_slower": v.p_slower, "q_slower": v.q_slower, "p_faster": v.p_faster,
                           "q_faster": v.q_faster, "noise_floor": v.noise_floor, "n_base": v.n_base,
                           "n_head": v.n_head, "unit": v.unit, "note": v.note} for v in c.verdicts]}
    return json.dumps(doc, indent=2)
