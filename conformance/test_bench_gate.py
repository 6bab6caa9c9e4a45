"""ci/bench_gate.py on synthetic samples: a clear slowdown is flagged, noise is not,
a small-but-certain change and an unsupported big one are not, bad input exits 2."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from ci import bench_gate

REPO = Path(__file__).resolve().parent.parent


def _samples(seed: int, median_s: float, n: int = 40, noise: float = 0.02) -> list[float]:
    rng = random.Random(seed)
    return [median_s * (1 + rng.gauss(0, noise)) for _ in range(n)]


def _doc(benches: dict[str, list[float]], in_stats: bool = False) -> dict:
    out = []
    for name, s in benches.items():
        entry = {"name": name, "fullname": f"bench/x.py::{name}", "extra_info": {}, "stats": {}}
        if in_stats:
            entry["stats"]["data"] = s
        else:
            entry["extra_info"]["samples_s"] = s
        out.append(entry)
    return {"benchmarks": out}


def _write(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_clear_regression_flagged(tmp_path, capsys) -> None:
    base = _write(tmp_path / "base.json", _doc({"decode": _samples(1, 1e-3), "prefill": _samples(2, 2e-3)}))
    head = _write(tmp_path / "head.json", _doc({"decode": _samples(3, 1.10e-3), "prefill": _samples(4, 2e-3)}))
    assert bench_gate.main([str(base), str(head), "--markdown", str(tmp_path / "gate.md")]) == 1
    out = capsys.readouterr().out
    decode_row = next(line for line in out.splitlines() if "::decode" in line)
    prefill_row = next(line for line in out.splitlines() if "::prefill" in line)
    assert "REGRESSION" in decode_row and "REGRESSION" not in prefill_row
    assert "1 regression(s) in 2" in out
    assert (tmp_path / "gate.md").read_text().strip() == out.strip()


def test_noise_not_flagged(tmp_path) -> None:
    base = _write(tmp_path / "base.json", _doc({"decode": _samples(5, 1e-3, noise=0.05)}))
    head = _write(tmp_path / "head.json", _doc({"decode": _samples(6, 1e-3, noise=0.05)}))
    assert bench_gate.main([str(base), str(head)]) == 0


def test_both_conditions_needed() -> None:
    # 2% slower with tiny noise: certain, but under the 5% threshold.
    small = bench_gate.judge("small", _samples(7, 1e-3, noise=0.001), _samples(8, 1.02e-3, noise=0.001), 0.05, 0.01)
    assert small.p_slower < 0.01 and not small.regressed
    # 30% slower on three samples each: Mann-Whitney cannot reach p < 0.01 (its floor is 0.05).
    few = bench_gate.judge("few", [1.0, 1.1, 0.9], [1.3, 1.4, 1.2], 0.05, 0.01)
    assert few.change > 0.25 and few.p_slower >= 0.05 and not few.regressed
    # A clear speed-up is reported as such, not as a regression.
    fast = bench_gate.judge("fast", _samples(9, 1e-3), _samples(10, 0.8e-3), 0.05, 0.01)
    assert fast.improved and not fast.regressed


def test_stats_data_and_folders(tmp_path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "head").mkdir()
    _write(tmp_path / "base" / "a.json", _doc({"decode": _samples(11, 1e-3)}, in_stats=True))
    _write(tmp_path / "base" / "b.json", _doc({"write": _samples(12, 3e-4)}, in_stats=True))
    _write(tmp_path / "head" / "a.json", _doc({"decode": _samples(13, 1e-3)}, in_stats=True))
    _write(tmp_path / "head" / "b.json", _doc({"write": _samples(14, 4e-4)}, in_stats=True))
    assert bench_gate.main([str(tmp_path / "base"), str(tmp_path / "head")]) == 1


def test_bad_input_exits_2(tmp_path, capsys) -> None:
    good = _write(tmp_path / "good.json", _doc({"decode": _samples(15, 1e-3)}))
    no_samples = _write(tmp_path / "none.json", {"benchmarks": [{"name": "decode", "fullname": "bench/x.py::decode",
                                                                  "extra_info": {}, "stats": {"median": 1.0}}]})
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    other = _write(tmp_path / "other.json", _doc({"prefill": _samples(16, 1e-3)}))
    assert bench_gate.main([str(good), str(tmp_path / "missing.json")]) == 2
    assert bench_gate.main([str(good), str(no_samples)]) == 2
    assert "no raw samples" in capsys.readouterr().err
    assert bench_gate.main([str(good), str(garbage)]) == 2
    assert bench_gate.main([str(good), str(other)]) == 2
    assert bench_gate.main([str(good), str(good), "--alpha", "0"]) == 2
    assert bench_gate.main([str(good)]) == 2  # argparse: HEAD missing


def test_help_runs_as_a_script() -> None:
    res = subprocess.run([sys.executable, "ci/bench_gate.py", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "--threshold" in res.stdout and "Exit status" in res.stdout
