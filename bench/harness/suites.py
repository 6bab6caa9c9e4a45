"""The suite registry: which benchmark files a suite runs and what it needs.

A new suite is a new entry here, not a special case in the runner or the reports.
Files are globs relative to the tree's root, so the gate can ask a base revision's
tree which of them it has, and a report can tell which suite a benchmark (named
`path::test`) belongs to. `figures` names the plots of bench/harness/figures.py the
reports draw from the suite's records.
"""
from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    files: tuple[str, ...]           # globs relative to the tree root
    needs_cuda: bool = False
    pytest_args: tuple[str, ...] = ()
    figures: tuple[str, ...] = ()    # keys of bench.harness.figures.FIGURES

    def owns(self, benchmark: str) -> bool:
        """Whether a benchmark's full name ('bench/x.py::test[...]') is one of this suite's files."""
        path = benchmark.split("::", 1)[0]
        return any(fnmatchcase(path, pattern) for pattern in self.files)

    def paths(self, tree: Path) -> list[Path]:
        """The suite's files that exist in `tree`, sorted, relative to it."""
        found = {p.relative_to(tree) for pattern in self.files for p in tree.glob(pattern) if p.is_file()}
        return sorted(found)


SUITES: tuple[Suite, ...] = (
    Suite("scheduler", "scheduler step cost, 256 and 1024 running sequences (CPU, no torch)",
          ("bench/bench_scheduler.py",)),
    Suite("prefix", "prefix-cache lookup of a 2,048-token cached prompt (CPU, no torch)",
          ("bench/bench_prefix_cache.py",)),
    Suite("kernels", "paged_decode, paged_prefill and write_kv against the measured ceilings and peers (CUDA)",
          ("bench/bench_kernels_decode.py", "bench/bench_kernels_prefill.py", "bench/bench_kernels_write.py"),
          needs_cuda=True, pytest_args=("-m", "gpu"), figures=("roofline",)),
    Suite("engine", "SmolLM2 end to end: offline tokens/s against HF generate; serving TTFT, TPOT, ITL",
          ("bench/bench_engine*.py",), figures=("throughput_vs_peer",)),
)


def get(name: str) -> list[Suite]:
    """The suites a --suite value names ('all' is every one); ValueError for others."""
    if name == "all":
        return list(SUITES)
    for suite in SUITES:
        if suite.name == name:
            return [suite]
    raise ValueError(f"suite {name!r} is not one of {[s.name for s in SUITES] + ['all']}")


def skip_reason(suite: Suite, tree: Path, cuda: bool | None) -> str | None:
    """Why `suite` cannot run in `tree` on this machine (None: it can). `cuda` None
    means not probed yet (the caller probes only for suites that need it)."""
    if not suite.paths(tree):
        return f"no benchmark files for it yet ({', '.join(suite.files)})"
    if suite.needs_cuda and cuda is False:
        return "needs a CUDA device (torch.cuda.is_available() is False here)"
    return None
