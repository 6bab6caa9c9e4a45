"""ci/bench_gate.py, a thin caller of bench.harness (whose statistics and calibration
are tested in test_harness_*.py): a clear slowdown is flagged, noise is not, both
conditions are needed, raw samples come from either place, bad input exits 2."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from bench.harness import synthetic
from bench.harness.commands import compare_main
from bench.harness.compare import Settings, compare_runs
from bench.harness.results import load_run

REPO = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "ci/bench_gate.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def _write(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc))
    return path


def _side(path: Path, seed: int, medians: dict[str, float], noise: float = 0.02, n: int = 40,
          in_stats: bool = True) -> Path:
    gen = np.random.default_rng(seed)
    return _write(path, synthetic.document({k: synthetic.noisy(gen, m, n, noise) for k, m in medians.items()},
                                           in_stats=in_stats))


def test_clear_regression_flagged(tmp_path) -> None:
    base = _side(tmp_path / "base.json", 1, {"bench/x.py::decode": 1e-3, "bench/x.py::prefill": 2e-3})
    slow = _side(tmp_path / "slow.json", 2, {"bench/x.py::decode": 1.1e-3, "bench/x.py::prefill": 2e-3})
    bad = _run(str(base), str(slow), "--report", str(tmp_path / "gate.md"))
    assert bad.returncode == 1, bad.stderr
    first = bad.stdout.splitlines()[0]
    assert first.startswith("**FAIL**: 1 regression(s)") and "decode" in first and "prefill" not in first
    assert (tmp_path / "gate.md").read_text() == bad.stdout


def test_noise_not_flagged(tmp_path) -> None:
    base = load_run(_side(tmp_path / "base.json", 5, {"decode": 1e-3}, noise=0.05))
    head = load_run(_side(tmp_path / "head.json", 6, {"decode": 1e-3}, noise=0.05))
    assert compare_runs(base, head).exit_status == 0


def test_both_conditions_needed(tmp_path) -> None:
    # 2% slower with tiny noise: certain, but under the 5% threshold.
    base = load_run(_side(tmp_path / "b.json", 7, {"small": 1e-3}, noise=0.001))
    head = load_run(_side(tmp_path / "h.json", 8, {"small": 1.02e-3}, noise=0.001))
    [small] = compare_runs(base, head).verdicts
    assert small.p_slower < 0.01 and small.verdict == "same"
    # 30% slower on three samples each: the U test cannot reach p < 0.01 (its floor is 0.05).
    few_b = load_run(_write(tmp_path / "fb.json", synthetic.document({"few": [1.0, 1.1, 0.9]})))
    few_h = load_run(_write(tmp_path / "fh.json", synthetic.document({"few": [1.3, 1.4, 1.2]})))
    [few] = compare_runs(few_b, few_h).verdicts
    assert few.change > 0.25 and few.p_slower >= 0.05 and few.verdict == "inconclusive"
    # A clear speed-up is reported as such, not as a regression.
    fast = load_run(_side(tmp_path / "f.json", 10, {"small": 0.8e-3}))
    [v] = compare_runs(base, fast).verdicts
    assert v.verdict == "faster" and not v.fails


def test_stats_data_and_folders(tmp_path) -> None:
    for side, write_s in (("base", 3e-4), ("head", 4e-4)):
        (tmp_path / side).mkdir()
        _side(tmp_path / side / "a.json", 11 if side == "base" else 13, {"decode": 1e-3}, in_stats=False)
        _side(tmp_path / side / "b.json", 12 if side == "base" else 14, {"write": write_s})
    c = compare_runs(load_run(tmp_path / "base"), load_run(tmp_path / "head"))
    assert [v.name for v in c.regressions] == ["write"]


def test_bad_input_exits_2(tmp_path, capsys) -> None:
    good = _side(tmp_path / "good.json", 15, {"decode": 1e-3})
    assert compare_main([str(good), str(tmp_path / "missing.json")], prog="ci/bench_gate.py") == 2
    assert capsys.readouterr().err.startswith("ci/bench_gate.py: error:")
    assert compare_main([str(good)]) == 2  # argparse: HEAD missing


def test_help_runs_as_a_script() -> None:
    res = _run("--help")
    assert res.returncode == 0, res.stderr
    assert "--threshold" in res.stdout and "Exit status" in res.stdout
