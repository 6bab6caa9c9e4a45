"""`pagedlm bench history` over the committed results: a point per commit named by the
tree it measured, medians in the table, the trend PNG and each device's newest suite
figures (the engine against its peer, the kernels' roofline) linked from the report."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from bench.harness import history
from engine.entrypoints.cli import main as pagedlm

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"
PNG = b"\x89PNG\r\n\x1a\n"
needs_matplotlib = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib")


def test_points_take_the_commit_machine_txt_names(tmp_path) -> None:
    # the committed A/A rounds alone (later H200 runs sit beside them in the real folder)
    shutil.copytree(RESULTS / "h200" / "kernels_quick", tmp_path / "kernels_quick")
    points, skipped = history.collect(tmp_path)
    [point] = points
    assert point.commit == "4951732" and sorted(point.files) == ["kernels_quick/round0.json",
                                                                  "kernels_quick/round1.json"]
    assert skipped == 0 and len(point.medians) == 14 == len(point.records)
    rounds = [json.loads((RESULTS / "h200" / "kernels_quick" / f"round{r}.json").read_text()) for r in (0, 1)]
    name = rounds[0]["benchmarks"][0]["fullname"]
    medians = sorted(b["extra_info"]["median_s"] for d in rounds for b in d["benchmarks"] if b["fullname"] == name)
    assert point.medians[name] == medians[1]        # of two rounds: the upper median, one of them


def test_commits_are_ordered_by_time_and_other_json_left_out(tmp_path) -> None:
    engine = json.loads((RESULTS / "cpu" / "bench_engine_cpu.json").read_text())
    for i, (commit, when, scale) in enumerate((("bbbb", "2026-12-03T00:00:00", 2.0), ("aaaa", "2026-12-01T00:00:00", 1.0))):
        doc = json.loads(json.dumps(engine))
        doc["commit_info"] = {"id": commit, "time": when, "dirty": i == 0}
        for b in doc["benchmarks"]:
            b["stats"]["median"] *= scale
        (tmp_path / f"run{i}.json").write_text(json.dumps(doc))
    (tmp_path / "sweep.json").write_text(json.dumps({"rows": []}))
    points, skipped = history.collect(tmp_path)
    assert [p.commit for p in points] == ["aaaa", "bbbb+dirty"] and skipped == 1
    name = engine["benchmarks"][0]["fullname"]
    assert points[1].medians[name] == pytest.approx(2 * points[0].medians[name])
    text = history.table("cpu", points, skipped)
    assert "| aaaa (2026-12-01) | bbbb+dirty (2026-12-03) |" in text and "1 other JSON file(s) left out" in text


@needs_matplotlib
def test_history_report_links_the_trend_and_the_newest_figures(tmp_path, capsys) -> None:
    results = tmp_path / "results"
    shutil.copytree(RESULTS / "cpu", results / "cpu")
    shutil.copytree(RESULTS / "h200" / "kernels_quick", results / "h200" / "kernels_quick")
    report, plot = tmp_path / "report" / "history.md", tmp_path / "report" / "plots" / "trend.png"
    assert pagedlm(["bench", "history", "--results", str(results), "--plot", str(plot), "--report", str(report)]) == 0
    text = report.read_text()
    cpu = json.loads((RESULTS / "cpu" / "bench_engine_cpu.json").read_text())["commit_info"]
    label = cpu["id"][:10] + ("+dirty" if cpu.get("dirty") else "")
    assert "### cpu" in text and "### h200" in text and f"| {label} (" in text
    for name in ("trend", "cpu_engine_throughput_vs_peer", "h200_kernels_roofline"):
        png = plot.parent / f"{name}.png"
        assert png.read_bytes()[:8] == PNG and png.stat().st_size > 10_000
        assert f"![{name}](plots/{name}.png)" in text          # relative to the report
    assert pagedlm(["bench", "history", "--results", str(results), "--device", "h100"]) == 2
    assert "--device 'h100': no folder" in capsys.readouterr().err
