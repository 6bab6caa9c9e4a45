"""A/A calibration on synthetic rounds with a known truth: quiet rounds give no false
alarms, a low noise floor and planted slowdowns caught; wandering rounds give a
floor near the truth and no false alarms; too few rounds are refused."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench.harness import calibrate, synthetic
from bench.harness.results import HarnessInputError
from engine.entrypoints.cli import main as pagedlm

NAMES = {"bench/x.py::test_a": 1e-3, "bench/x.py::test_b": 2e-4}


def _rounds(tmp_path, round_noise: float, n_rounds: int = 12, seed: int = 0):
    gen = np.random.default_rng(seed)
    folder = synthetic.write_rounds(tmp_path / f"r{round_noise}",
                                    synthetic.suite(gen, NAMES, n_rounds, 40, noise=0.01, round_noise=round_noise))
    return folder, calibrate.rounds_of(folder)


def test_quiet_rounds(tmp_path) -> None:
    _, rounds = _rounds(tmp_path, 0.005)
    cal = calibrate.calibrate(rounds, per_side=5, threshold=0.05, alpha=0.01, gates=30, planted=(0.02, 0.2))
    assert cal.suite_false_alarms == 0 and all(v == 0 for v in cal.false_alarms.values())
    assert all(f < 0.02 for f in cal.noise_floors.values())
    for name in NAMES:
        assert cal.detection[name]["20%"] == 1.0      # far past threshold and floor: always caught
        assert cal.detection[name]["2%"] == 0.0       # under the threshold: never called slower


def test_wandering_rounds(tmp_path) -> None:
    _, rounds = _rounds(tmp_path, 0.08, n_rounds=16, seed=1)
    cal = calibrate.calibrate(rounds, per_side=5, threshold=0.05, alpha=0.01, gates=40, planted=(0.2,))
    assert cal.suite_false_alarms <= 0.05
    # 95th percentile of |change| for 5 rounds a side at sigma 8 %: 1.96 * 0.08 * sqrt(2/5) ~ 10 %
    assert all(0.05 < f < 0.2 for f in cal.noise_floors.values()), cal.noise_floors
    assert all(rate > 0.5 for rate in cal.too_noisy.values())


def test_too_few_rounds_and_the_command(tmp_path, capsys) -> None:
    folder, rounds = _rounds(tmp_path, 0.005, n_rounds=6)
    with pytest.raises(HarnessInputError, match="needs at least 10 rounds"):
        calibrate.calibrate(rounds, per_side=5, threshold=0.05, alpha=0.01)
    out = tmp_path / "cal"
    assert pagedlm(["bench", "calibrate", "--from", str(folder), "--rounds", "3", "--gates", "10",
                    "--out", str(out)]) == 0
    doc = json.loads((out / "calibration.json").read_text())
    assert set(doc["noise_floors"]) == set(NAMES) and doc["rounds"] == 6
    assert "Suite false-alarm rate" in capsys.readouterr().out
    assert pagedlm(["bench", "compare", str(folder), str(folder), "--noise-floors", str(out / "calibration.json")]) == 0
