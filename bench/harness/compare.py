"""Judge a suite: every benchmark of BASE against HEAD, corrected across the suite.

Per benchmark: base and head medians, the change with a bootstrap 95 % interval,
the one-sided Mann-Whitney U p-values (slower, faster) on the pooled samples, and
their Benjamini-Hochberg adjustment across the suite. Verdicts:

- slower        change > threshold and q(slower) < alpha: a regression
- faster        change < -threshold and q(faster) < alpha
- same          |change| <= threshold
- inconclusive  |change| > threshold but not significant, or too few samples for
                the test to reach alpha at all (the note says how many it needs)
- too noisy     the benchmark's A/A noise floor exceeds the threshold: not gated
- removed       in BASE, not in HEAD: fails unless allow_removed
- new           in HEAD only (reported, never a failure)
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

from bench.harness import stats
from bench.harness.results import HarnessInputError, Run, describe_difference

VERDICT_ORDER = ("slower", "removed", "inconclusive", "too noisy", "faster", "same", "new")


@dataclass(frozen=True)
class Settings:
    threshold: float = 0.05
    alpha: float = 0.01
    correction: bool = True        # Benjamini-Hochberg across the suite
    allow_removed: bool = False
    allow_different_machines: bool = False
    resamples: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.threshold < 10:
            raise ValueError(f"threshold must be in [0, 10), got {self.threshold}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")


@dataclass(frozen=True)
class Verdict:
    name: str
    verdict: str
    base_median: float | None = None
    head_median: float | None = None
    change: float | None = None
    ci: tuple[float, float] | None = None
    p_slower: float | None = None
    p_faster: float | None = None
    q_slower: float | None = None
    q_faster: float | None = None
    noise_floor: float | None = None
    n_base: int = 0
    n_head: int = 0
    note: str = ""

    @property
    def fails(self) -> bool:
        return self.verdict == "slower" or (self.verdict == "removed" and "allowed" not in self.note)


@dataclass(frozen=True)
class Comparison:
    verdicts: list[Verdict]
    settings: Settings
    base: Run
    head: Run
    notes: tuple[str, ...] = ()

    @property
    def regressions(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.fails]

    @property
    def exit_status(self) -> int:
        return 1 if self.regressions else 0


def check_comparable(base: Run, head: Run, allow_different_machines: bool) -> list[str]:
    """Raise HarnessInputError unless both runs came from one machine and ran the same
    workload per benchmark; returns notes on what could not be checked."""
    notes = []
    if base.machine != head.machine:
        diff = describe_difference(base.machine, head.machine)
        if not allow_different_machines:
            raise HarnessInputError(f"base and head ran on different machines ({diff}); "
                                    "--allow-different-machines compares them anyway")
        notes.append(f"different machines, compared on request: {diff}")
    for name in sorted(base.benchmarks.keys() & head.benchmarks.keys()):
        b, h = base.benchmarks[name].fingerprint, head.benchmarks[name].fingerprint
        if b is not None and h is not None and b != h:
            raise HarnessInputError(f"benchmark {name!r} ran different workloads in base and head "
                                    f"({describe_difference(b, h)})")
        if (b is None) != (h is None):
            notes.append(f"{name}: workload fingerprint recorded only in {'head' if b is None else 'base'}")
    return notes


def _seed(settings: Settings, name: str) -> int:
    return settings.seed * 1_000_003 + zlib.crc32(name.encode())  # stable per benchmark across runs


def _noise_floor(name: str, base: Run, head: Run, floors: dict[str, float] | None) -> float | None:
    if floors and name in floors:
        return floors[name]
    spreads = [s for s in (stats.aa_spread(base.benchmarks[name].rounds), stats.aa_spread(head.benchmarks[name].rounds))
               if s is not None]
    return max(spreads) if spreads else None


def compare_runs(base: Run, head: Run, settings: Settings | None = None,
                 noise_floors: dict[str, float] | None = None) -> Comparison:
    """Verdicts for every benchmark in either run; `noise_floors` ({name: A/A spread},
    from calibration) overrides the spread measured between a side's own rounds."""
    settings = settings or Settings()
    notes = check_comparable(base, head, settings.allow_different_machines)
    shared = sorted(base.benchmarks.keys() & head.benchmarks.keys())
    if not shared:
        raise HarnessInputError("base and head share no benchmark")
    pairs = [(head.benchmarks[n].samples, base.benchmarks[n].samples) for n in shared]
    slower = stats.p_greater_many(pairs)
    faster = stats.p_greater_many([(b, h) for h, b in pairs])
    raw = list(zip(slower, faster))
    if settings.correction:
        q_slow = stats.benjamini_hochberg([p for p, _ in raw])
        q_fast = stats.benjamini_hochberg([p for _, p in raw])
    else:
        q_slow, q_fast = [p for p, _ in raw], [p for _, p in raw]
    verdicts = [_judge(name, base, head, raw[i], (q_slow[i], q_fast[i]), settings, noise_floors)
                for i, name in enumerate(shared)]
    for name in sorted(base.benchmarks.keys() - head.benchmarks.keys()):
        note = "allowed (--allow-removed)" if settings.allow_removed else "in base, missing in head (renamed or deleted?)"
        verdicts.append(Verdict(name, "removed", note=note))
    verdicts += [Verdict(name, "new", note="in head only") for name in sorted(head.benchmarks.keys() - base.benchmarks.keys())]
    verdicts.sort(key=lambda v: (VERDICT_ORDER.index(v.verdict), v.name))
    return Comparison(verdicts, settings, base, head, tuple(notes))


def _judge(name: str, base: Run, head: Run, p: tuple[float, float], q: tuple[float, float],
           settings: Settings, floors: dict[str, float] | None) -> Verdict:
    b_series, h_series = base.benchmarks[name], head.benchmarks[name]
    b, h = b_series.samples, h_series.samples
    delta = stats.change(b, h)
    ci = stats.bootstrap_change_ci(b_series.rounds, h_series.rounds, _seed(settings, name), settings.resamples)
    floor = _noise_floor(name, base, head, floors)
    common = dict(base_median=stats.median(b), head_median=stats.median(h), change=delta, ci=ci,
                  p_slower=p[0], p_faster=p[1], q_slower=q[0], q_faster=q[1], noise_floor=floor,
                  n_base=len(b), n_head=len(h))
    t, alpha = settings.threshold, settings.alpha
    if floor is not None and floor > t:
        return Verdict(name, "too noisy", **common,
                       note=f"A/A noise floor {floor:.1%} exceeds the {t:.0%} threshold: not gated")
    if abs(delta) <= t:
        return Verdict(name, "same", **common)
    if stats.smallest_p(len(b), len(h)) >= alpha:
        need = stats.samples_needed(alpha)
        return Verdict(name, "inconclusive", **common,
                       note=f"needs {need} samples per side for p < {alpha:g} (has {len(b)} and {len(h)})")
    if delta > t and q[0] < alpha:
        return Verdict(name, "slower", **common)
    if delta < -t and q[1] < alpha:
        return Verdict(name, "faster", **common)
    return Verdict(name, "inconclusive", **common, note="beyond the threshold but not significant")
