"""A/A calibration of the gate: the same tree against itself, on this machine.

The suite runs N times (rounds, one pytest process each). Then many A/A gates
are drawn from those rounds -- `per_side` rounds for base and as many others for
head, in a seeded random split -- and judged exactly as the gate judges. Reported:

- the false-alarm rate at the chosen threshold and alpha, per benchmark and for
  the suite (any benchmark failing);
- each benchmark's noise floor: the 95th percentile of |change| over the A/A
  gates, the smallest effect the gate can tell from noise here;
- planted slowdowns: the same splits with one side's samples scaled by 1 + f,
  and how often the gate calls that benchmark slower.

The splits overlap (rounds are reused), so the rates are resampling estimates
over N rounds, not independent trials; N is printed beside them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.harness.compare import Settings, compare_runs
from bench.harness.results import HarnessInputError, Run, Series, load_run

PLANTED = (0.05, 0.10, 0.20, 0.50)


@dataclass
class Calibration:
    rounds: int
    per_side: int
    gates: int
    threshold: float
    alpha: float
    suite_false_alarms: float = 0.0
    false_alarms: dict[str, float] = field(default_factory=dict)
    too_noisy: dict[str, float] = field(default_factory=dict)
    noise_floors: dict[str, float] = field(default_factory=dict)
    detection: dict[str, dict[str, float]] = field(default_factory=dict)   # {name: {"20%": rate}}

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def rounds_of(folder: Path) -> list[Run]:
    """Every round file under `folder` as its own one-round run, in name order."""
    files = sorted(folder.rglob("round*.json"), key=lambda p: (len(p.name), p.name))
    if not files:
        raise HarnessInputError(f"{folder}: no round*.json files to calibrate from")
    return [load_run(f) for f in files]


def pooled(rounds: list[Run], picks: list[int], source: Path, scale: dict[str, float] | None = None) -> Run:
    """One side of a gate from the picked rounds; `scale` plants {name: factor}."""
    scale = scale or {}
    benchmarks: dict[str, Series] = {}
    for i in picks:
        for name, s in rounds[i].benchmarks.items():
            out = benchmarks.setdefault(name, Series(name, fingerprint=s.fingerprint, extra_info=s.extra_info))
            factor = scale.get(name, 1.0)
            out.rounds.extend(tuple(x * factor for x in r) for r in s.rounds)
    return Run(source, rounds[picks[0]].machine, benchmarks)


def calibrate(rounds: list[Run], per_side: int, threshold: float, alpha: float, gates: int = 200,
              seed: int = 0, planted: tuple[float, ...] = PLANTED) -> Calibration:
    """A/A gates drawn from `rounds`; see the module docstring."""
    if len(rounds) < 2 * per_side:
        raise HarnessInputError(f"calibration needs at least {2 * per_side} rounds for {per_side} per side, "
                                f"got {len(rounds)}")
    rng = np.random.default_rng(seed)
    settings = Settings(threshold=threshold, alpha=alpha, resamples=100)
    names = sorted(set().union(*(r.benchmarks for r in rounds)))
    cal = Calibration(len(rounds), per_side, gates, threshold, alpha)
    alarms = {n: 0 for n in names}
    noisy = {n: 0 for n in names}
    changes: dict[str, list[float]] = {n: [] for n in names}
    detected = {n: {f: 0 for f in planted} for n in names}
    suite_alarms = 0
    for g in range(gates):
        picks = rng.permutation(len(rounds))[:2 * per_side]
        base_p, head_p = sorted(picks[0::2].tolist()), sorted(picks[1::2].tolist())
        base = pooled(rounds, base_p, Path(f"aa{g}/base"))
        c = compare_runs(base, pooled(rounds, head_p, Path(f"aa{g}/head")), settings)
        suite_alarms += bool(c.regressions)
        for v in c.verdicts:
            alarms[v.name] += v.fails
            noisy[v.name] += v.verdict == "too noisy"
            if v.change is not None:
                changes[v.name].append(abs(v.change))
        for name in names:
            for f in planted:
                head = pooled(rounds, head_p, Path(f"aa{g}/planted"), scale={name: 1 + f})
                verdict = next(v for v in compare_runs(base, head, settings).verdicts if v.name == name)
                detected[name][f] += verdict.verdict == "slower"
    cal.suite_false_alarms = suite_alarms / gates
    cal.false_alarms = {n: alarms[n] / gates for n in names}
    cal.too_noisy = {n: noisy[n] / gates for n in names}
    cal.noise_floors = {n: float(np.quantile(changes[n], 0.95)) for n in names if changes[n]}
    cal.detection = {n: {f"{f:.0%}": detected[n][f] / gates for f in planted} for n in names}
    return cal


def markdown(cal: Calibration) -> str:
    planted = list(next(iter(cal.detection.values())).keys()) if cal.detection else []
    lines = [f"A/A calibration: {cal.rounds} rounds of one tree, {cal.gates} A/A gates of {cal.per_side} rounds "
             f"per side drawn from them; threshold {cal.threshold:.0%}, alpha {cal.alpha:g}, Benjamini-Hochberg "
             f"across the suite.", "",
             f"**Suite false-alarm rate: {cal.suite_false_alarms:.1%}** (gates where any benchmark failed).", "",
             "| benchmark | false alarms | too noisy to gate | noise floor (95th pct of A/A change) | "
             + " | ".join(f"planted +{p} detected" for p in planted) + " |",
             "|---|---|---|---|" + "---|" * len(planted)]
    for name in sorted(cal.false_alarms):
        det = " | ".join(f"{cal.detection[name][p]:.0%}" for p in planted)
        lines.append(f"| `{name}` | {cal.false_alarms[name]:.1%} | {cal.too_noisy[name]:.0%} | "
                     f"{cal.noise_floors.get(name, float('nan')):.1%} | {det} |")
    return "\n".join(lines) + "\n"


def write(cal: Calibration, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "calibration.json", out / "calibration.md"
    js.write_text(json.dumps(cal.as_dict(), indent=2) + "\n")
    md.write_text(markdown(cal))
    return js, md
