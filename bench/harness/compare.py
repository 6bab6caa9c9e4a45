"""Judge a suite: every benchmark of BASE against HEAD, corrected across the suite.

Per benchmark: base and head medians of the pooled samples, the change with a
bootstrap 95 % interval, the one-sided Mann-Whitney U p-values (slower, faster)
and their Benjamini-Hochberg adjustment across the suite. The U test compares
round medians where each side has enough rounds for it to reach alpha across the
suite (samples within one process share its luck: calibration on the development
machine saw whole rounds move by 30 %), else the samples. Verdicts:

- slower        change > threshold and q(slower) < alpha: a regression
- faster        change < -threshold and q(faster) < alpha
- same          |change| <= threshold
- inconclusive  |change| > threshold but not significant; when too few rounds or
                samples could never reach alpha, the note says how many it needs
- too noisy     the benchmark's A/A noise floor (from calibration, else from the
                spread of each side's round medians) exceeds the threshold and the
                change is within it: not gated at the threshold. A change past the
                floor is judged as above (the floor is its minimum detectable effect).
- removed       in BASE, not in HEAD: fails unless allow_removed
- new           in HEAD only (reported, never a failure)
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

from bench.harness import stats
from bench.harness.results import HarnessInputError, Run, Series, describe_difference

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
    n_base: int = 0                # units the U test compared: rounds, or samples
    n_head: int = 0
    unit: str = ""
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
    return stats.noise_floor(base.benchmarks[name].rounds, head.benchmarks[name].rounds)


def test_units(b: Series, h: Series, alpha: float, family: int) -> tuple[list[float], list[float], str]:
    """What the U test compares. Samples of one process are not independent of each
    other (a neighbour's load or the clock moves a whole round), so where each side has
    enough rounds for the test to reach alpha across the suite it compares the round
    medians. With fewer rounds it compares the samples, and the noise floor measured
    between the rounds (two or more per side) guards against a round that moved."""
    kb, kh = len(b.rounds), len(h.rounds)
    if kb >= 2 and kh >= 2 and stats.smallest_p(kb, kh) * family < alpha:
        return [stats.median(r) for r in b.rounds], [stats.median(r) for r in h.rounds], "rounds"
    return b.samples, h.samples, "samples"


def compare_runs(base: Run, head: Run, settings: Settings | None = None,
                 noise_floors: dict[str, float] | None = None) -> Comparison:
    """Verdicts for every benchmark in either run; `noise_floors` ({name: A/A spread},
    from calibration) overrides the spread measured between a side's own rounds."""
    settings = settings or Settings()
    notes = check_comparable(base, head, settings.allow_different_machines)
    shared = sorted(base.benchmarks.keys() & head.benchmarks.keys())
    if not shared:
        raise HarnessInputError("base and head share no benchmark")
    family = len(shared) if settings.correction else 1
    units = [test_units(base.benchmarks[n], head.benchmarks[n], settings.alpha, family) for n in shared]
    slower = stats.p_greater_many([(h, b) for b, h, _ in units])
    faster = stats.p_greater_many([(b, h) for b, h, _ in units])
    raw = list(zip(slower, faster))
    if settings.correction:
        q_slow = stats.benjamini_hochberg([p for p, _ in raw])
        q_fast = stats.benjamini_hochberg([p for _, p in raw])
    else:
        q_slow, q_fast = [p for p, _ in raw], [p for _, p in raw]
    verdicts = [_judge(name, base, head, units[i], raw[i], (q_slow[i], q_fast[i]), settings, noise_floors, family)
                for i, name in enumerate(shared)]
    for name in sorted(base.benchmarks.keys() - head.benchmarks.keys()):
        note = "allowed (--allow-removed)" if settings.allow_removed else "in base, missing in head (renamed or deleted?)"
        verdicts.append(Verdict(name, "removed", note=note))
    verdicts += [Verdict(name, "new", note="in head only") for name in sorted(head.benchmarks.keys() - base.benchmarks.keys())]
    verdicts.sort(key=lambda v: (VERDICT_ORDER.index(v.verdict), v.name))
    return Comparison(verdicts, settings, base, head, tuple(notes))


def _judge(name: str, base: Run, head: Run, units: tuple[list[float], list[float], str], p: tuple[float, float],
           q: tuple[float, float], settings: Settings, floors: dict[str, float] | None, family: int) -> Verdict:
    b_series, h_series = base.benchmarks[name], head.benchmarks[name]
    b, h = b_series.samples, h_series.samples
    delta = stats.change(b, h)
    ci = stats.bootstrap_change_ci(b_series.rounds, h_series.rounds, _seed(settings, name), settings.resamples)
    floor = _noise_floor(name, base, head, floors)
    ub, uh, unit = units
    common = dict(base_median=stats.median(b), head_median=stats.median(h), change=delta, ci=ci,
                  p_slower=p[0], p_faster=p[1], q_slower=q[0], q_faster=q[1], noise_floor=floor,
                  n_base=len(ub), n_head=len(uh), unit=unit)
    t, alpha = settings.threshold, settings.alpha
    noisy = floor is not None and floor > t
    if noisy and abs(delta) <= floor:
        return Verdict(name, "too noisy", **common,
                       note=f"A/A noise floor {floor:.1%} exceeds the {t:.0%} threshold: not gated at it")
    if abs(delta) <= t:
        return Verdict(name, "same", **common)
    past = f"past its noise floor {floor:.1%}" if noisy else ""  # the smallest change it can tell apart
    if delta > t and q[0] < alpha:
        return Verdict(name, "slower", **common, note=past)
    if delta < -t and q[1] < alpha:
        return Verdict(name, "faster", **common, note=past)
    best = stats.smallest_p(len(ub), len(uh))
    if best >= alpha:
        note = (f"needs {stats.samples_needed(alpha)} {unit} per side for p < {alpha:g} "
                f"(has {len(ub)} and {len(uh)})")
    elif best * family >= alpha:
        note = (f"needs {stats.samples_needed(alpha / family)} {unit} per side for q < {alpha:g} across "
                f"{family} benchmarks (has {len(ub)} and {len(uh)})")
    else:
        note = "beyond the threshold but not significant"
    return Verdict(name, "inconclusive", **common, note=note)
