"""What the comparison refuses to judge: one line on stderr, exit 2 — and a benchmark
removed in HEAD, which fails the gate (exit 1) unless --allow-removed."""
from __future__ import annotations

import json

import numpy as np
import pytest

from bench.harness import synthetic
from bench.harness.commands import compare_main

NAME = "bench/bench_scheduler.py::test_schedule_update_round[256]"


def _write(path, doc) -> str:
    path.write_text(json.dumps(doc))
    return str(path)


def _doc(seed: int = 0, names=(NAME,), **kw) -> dict:
    gen = np.random.default_rng(seed)
    return synthetic.document({n: synthetic.noisy(gen, 1e-3, 20) for n in names}, **kw)


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_missing_file(tmp_path, capsys) -> None:
    good = _write(tmp_path / "a.json", _doc())
    assert compare_main([good, str(tmp_path / "nope.json")]) == 2
    assert "nope.json: no such file" in _error(capsys)


@pytest.mark.parametrize("content, needle", [("{not json", "not JSON at all"),
                                             (json.dumps({"hello": 1}), "not pytest-benchmark JSON"),
                                             (json.dumps([1, 2]), "not pytest-benchmark JSON")])
def test_not_pytest_benchmark_json(tmp_path, capsys, content: str, needle: str) -> None:
    good = _write(tmp_path / "a.json", _doc())
    bad = tmp_path / "b.json"
    bad.write_text(content)
    assert compare_main([good, str(bad)]) == 2
    assert needle in _error(capsys)


def test_no_raw_samples_names_the_flag(tmp_path, capsys) -> None:
    doc = _doc()
    del doc["benchmarks"][0]["stats"]["data"]  # what pytest-benchmark writes without --benchmark-save-data
    assert compare_main([_write(tmp_path / "a.json", _doc()), _write(tmp_path / "b.json", doc)]) == 2
    err = _error(capsys)
    assert "no raw samples" in err and "--benchmark-save-data" in err and NAME in err


def test_samples_from_extra_info_are_read(tmp_path) -> None:
    base = _write(tmp_path / "a.json", _doc(1, in_stats=False))
    assert compare_main([base, _write(tmp_path / "b.json", _doc(2, in_stats=False))]) == 0


@pytest.mark.parametrize("other, needle", [
    ({"cpu": {"brand_raw": "Other CPU", "count": 2}}, "cpu: 'Synthetic CPU' -> 'Other CPU'"),
    ({"cpu": {"brand_raw": "Synthetic CPU", "count": 64}}, "cores: 2 -> 64"),
    ({"cpu": {"brand_raw": "Synthetic CPU", "count": 2}, "gpu": {"name": "NVIDIA H200"}}, "gpu: None -> 'NVIDIA H200'"),
])
def test_different_machines(tmp_path, capsys, other: dict, needle: str) -> None:
    base = _write(tmp_path / "a.json", _doc(1))
    head = _write(tmp_path / "b.json", _doc(2, machine=other))
    assert compare_main([base, head]) == 2
    err = _error(capsys)
    assert "different machines" in err and needle in err and "--allow-different-machines" in err
    assert compare_main([base, head, "--allow-different-machines"]) == 0
    assert "compared on request" in capsys.readouterr().out


def test_different_workloads_name_the_benchmark_and_what_differs(tmp_path, capsys) -> None:
    fp = {"num_seqs": 256, "block_size": 16, "seed": 0}
    base = _write(tmp_path / "a.json", _doc(1, fingerprints={NAME: fp}))
    head = _write(tmp_path / "b.json", _doc(2, fingerprints={NAME: {**fp, "block_size": 32}}))
    assert compare_main([base, head]) == 2
    err = _error(capsys)
    assert NAME in err and "block_size: 16 -> 32" in err and "num_seqs" not in err
    same = _write(tmp_path / "c.json", _doc(3, fingerprints={NAME: dict(fp)}))
    assert compare_main([base, same]) == 0


def test_rounds_of_one_side_must_share_machine_and_workload(tmp_path, capsys) -> None:
    (tmp_path / "side").mkdir()
    _write(tmp_path / "side" / "r0.json", _doc(1, fingerprints={NAME: {"seed": 0}}))
    _write(tmp_path / "side" / "r1.json", _doc(2, fingerprints={NAME: {"seed": 1}}))
    assert compare_main([str(tmp_path / "side"), _write(tmp_path / "b.json", _doc(3))]) == 2
    assert "other rounds of the same side" in _error(capsys)


def test_removed_benchmark_fails_unless_allowed(tmp_path, capsys) -> None:
    other = "bench/bench_scheduler.py::test_schedule_update_round[1024]"
    base = _write(tmp_path / "a.json", _doc(1, names=(NAME, other)))
    head = _write(tmp_path / "b.json", _doc(2, names=(NAME,)))
    assert compare_main([base, head]) == 1
    out = capsys.readouterr().out
    assert "**REMOVED**" in out and other in out.splitlines()[0]
    assert compare_main([base, head, "--allow-removed"]) == 0
    # a new benchmark in head is reported, never a failure
    assert compare_main([head, base]) == 0
    assert "| new |" in capsys.readouterr().out


def test_bad_arguments(tmp_path, capsys) -> None:
    good = _write(tmp_path / "a.json", _doc())
    assert compare_main([good, good, "--alpha", "0"]) == 2
    assert "alpha must be in (0, 1)" in _error(capsys)
    assert compare_main([good, good, "--threshold", "five"]) == 2
    assert compare_main([good]) == 2
    assert compare_main([good, _write(tmp_path / "x.json", _doc(names=("other",)))]) == 2
    assert "share no benchmark" in capsys.readouterr().err
    assert compare_main(["--help"]) == 0
    assert "Benjamini-Hochberg" in capsys.readouterr().out


def test_threshold_takes_percent_or_fraction(tmp_path, capsys) -> None:
    gen = np.random.default_rng(4)
    base = _write(tmp_path / "a.json", synthetic.document({NAME: synthetic.noisy(gen, 1e-3, 30, 0.002)}))
    head = _write(tmp_path / "b.json", synthetic.document({NAME: synthetic.noisy(gen, 1.04e-3, 30, 0.002)}))
    assert compare_main([base, head, "--threshold", "3%"]) == 1
    assert compare_main([base, head, "--threshold", "0.03"]) == 1
    assert compare_main([base, head, "--threshold", "5%"]) == 0
