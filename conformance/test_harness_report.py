"""Reports: the verdict table first with regressions on top, PNG plots that exist and
are images, roofline points from hand-computed FLOPs and bytes, the planting tool."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from bench.harness import figures, plant, plots, plots_engine, synthetic
from bench.harness.commands import compare_main

PNG = b"\x89PNG\r\n\x1a\n"
# matplotlib is not yet a dependency of the test extra everywhere: the plots skip without it.
needs_matplotlib = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                                      reason="needs matplotlib")
SUITE = {"bench/x.py::test_fast": 1e-4, "bench/x.py::test_slow": 1e-3, "bench/x.py::test_same": 5e-4}


def _sides(tmp_path: Path) -> tuple[str, str]:
    gen = np.random.default_rng(9)
    base = synthetic.write_rounds(tmp_path / "base", synthetic.suite(gen, SUITE, 6, 40, noise=0.01))
    head = synthetic.write_rounds(tmp_path / "head", synthetic.suite(
        gen, SUITE, 6, 40, noise=0.01, slowdown={"bench/x.py::test_slow": 0.3, "bench/x.py::test_fast": -0.3}))
    return str(base), str(head)


@needs_matplotlib
def test_report_puts_the_verdict_first_and_links_the_plots(tmp_path) -> None:
    base, head = _sides(tmp_path)
    report, folder = tmp_path / "out" / "report.md", tmp_path / "out" / "plots"
    assert compare_main([base, head, "--report", str(report), "--plots", str(folder)]) == 1
    text = report.read_text()
    lines = text.splitlines()
    assert lines[0].startswith("**FAIL**: 1 regression(s) in 3 benchmark(s): `bench/x.py::test_slow`")
    rows = [line for line in lines if line.startswith("| ") and "`bench/" in line]
    assert [r.split("|")[1].strip() for r in rows] == ["**SLOWER**", "faster", "same"]  # regressions on top
    assert "![distributions_1](plots/distributions_1.png)" in text
    png = folder / "distributions_1.png"
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 10_000


def test_roofline_points_are_the_hand_computed_ones(tmp_path) -> None:
    decode = {"kind": "decode", "batch": 2, "num_heads": 8, "num_kv_heads": 2, "context": 100, "head_dim": 64,
              "bytes": 2 * 2 * 2 * 100 * 2 * 64, "median_s": 1e-5, "ceiling_read_gbps": 3000.0,
              "ceiling_matmul_tflops": 800.0, "cache_dtype": "bf16"}
    ai, tflops, kind = plots.kernel_point(decode)
    flops = 4 * 2 * 8 * 100 * 64                   # QK^T and PV: 2 FLOPs per multiply-add, twice
    assert kind == "decode" and ai == pytest.approx(flops / decode["bytes"]) and ai == pytest.approx(4.0)
    assert tflops == pytest.approx(flops / 1e-5 / 1e12)
    prefill = {"kind": "prefill", "batch": 1, "seq_len": 10, "num_heads": 4, "num_kv_heads": 4, "head_dim": 8,
               "flops": 6400, "median_s": 1e-6, "ceiling_read_gbps": 3000.0, "ceiling_matmul_tflops": 800.0}
    ai, _, _ = plots.kernel_point(prefill)
    assert ai == pytest.approx(6400 / (2 * 10 * 8 * (2 * 4 + 2 * 4)))   # Q, O, K, V at 2 bytes
    assert plots.kernel_point({"kind": "write", "median_s": 1e-6}) is None


@needs_matplotlib
def test_roofline_png(tmp_path) -> None:
    decode = {"kind": "decode", "batch": 2, "num_heads": 8, "num_kv_heads": 2, "context": 100, "head_dim": 64,
              "bytes": 51200, "median_s": 1e-5, "ceiling_read_gbps": 3000.0, "ceiling_matmul_tflops": 800.0}
    prefill = {"kind": "prefill", "batch": 1, "seq_len": 10, "num_heads": 4, "num_kv_heads": 4, "head_dim": 8,
               "flops": 6400, "median_s": 1e-6, "ceiling_read_gbps": 3000.0, "ceiling_matmul_tflops": 800.0}
    path = plots.roofline([{"extra_info": decode}, {"extra_info": prefill}], tmp_path / "r.png", "test")
    assert path.read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match="no decode or prefill records"):
        plots.roofline([{"extra_info": {"kind": "write"}}], tmp_path / "w.png", "test")


def test_committed_h100_kernels_give_a_roofline_under_the_ceilings(tmp_path) -> None:
    results = Path(__file__).resolve().parent.parent / "bench" / "results" / "h100"
    records = [b for f in ("bench_decode.json", "bench_prefill.json")
               for b in json.loads((results / f).read_text())["benchmarks"]]
    for r in records:
        ai, tflops, _ = plots.kernel_point(r["extra_info"])
        info = r["extra_info"]
        bound = min(ai * info["ceiling_read_gbps"] / 1e3, info["ceiling_matmul_tflops"])
        assert tflops <= 1.02 * bound, (r["fullname"], tflops, bound)   # nothing beats a measured roof
    if importlib.util.find_spec("matplotlib") is not None:
        assert plots.roofline(records, tmp_path / "h100.png", "H100").stat().st_size > 10_000


def test_plant_scales_only_the_named_benchmark(tmp_path, capsys) -> None:
    gen = np.random.default_rng(1)
    doc = synthetic.document({"bench/x.py::test_a": synthetic.noisy(gen, 1e-3, 10),
                              "bench/x.py::test_b": synthetic.noisy(gen, 1e-3, 10)})
    src, dst = tmp_path / "in.json", tmp_path / "out.json"
    src.write_text(json.dumps(doc))
    assert plant.main([str(src), str(dst), "--benchmark", "test_a", "--factor", "1.5"]) == 0
    out = json.loads(dst.read_text())
    a_in, a_out = (d["benchmarks"][0]["stats"]["data"] for d in (doc, out))
    assert a_out == pytest.approx([x * 1.5 for x in a_in])
    assert out["benchmarks"][1]["stats"]["data"] == doc["benchmarks"][1]["stats"]["data"]
    assert out["commit_info"]["planted"] == "test_a x1.5"
    assert plant.main([str(src), str(dst), "--benchmark", "nothing", "--factor", "2"]) == 2
    assert "matches no benchmark" in capsys.readouterr().err


ENGINE_JSON = Path(__file__).resolve().parent.parent / "bench" / "results" / "cpu" / "bench_engine_cpu.json"


def test_engine_points_are_the_committed_figures() -> None:
    records = json.loads(ENGINE_JSON.read_text())["benchmarks"]
    [(key, points)] = plots_engine.panels(records).items()
    assert key == "smollm2-135m float32"
    # the committed run's own figures (any later run replaces them), sorted by batch
    want = sorted((i["batch"], i["ours_tokens_per_s"], i["hf_tokens_per_s"], i["limit_tokens_per_s"],
                   i["greedy_tokens_equal_hf"]) for i in (r["extra_info"] for r in records))
    assert [(p.batch, p.ours, p.peer, p.limit, p.same_tokens) for p in points] == want
    assert [p.batch for p in points] == [1, 16]
    twice = records + records[:1]
    with pytest.raises(ValueError, match="two records of one batch size"):
        plots_engine.panels(twice)
    with pytest.raises(ValueError, match="without hf_tokens_per_s"):
        plots_engine.engine_point({"batch": 1, "ours_tokens_per_s": 3.0})


@needs_matplotlib
def test_compare_plots_the_engine_against_its_peer_from_the_committed_json(tmp_path) -> None:
    report, folder = tmp_path / "report.md", tmp_path / "plots"
    assert compare_main([str(ENGINE_JSON), str(ENGINE_JSON), "--report", str(report), "--plots", str(folder)]) == 0
    png = folder / "engine_throughput_vs_peer.png"
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 10_000
    assert "![engine_throughput_vs_peer](plots/engine_throughput_vs_peer.png)" in report.read_text()


@needs_matplotlib
def test_the_suite_registry_decides_which_figures_a_record_gets(tmp_path) -> None:
    engine = json.loads(ENGINE_JSON.read_text())
    kernel = {"fullname": "bench/bench_kernels_decode.py::test_paged_decode[x]", "extra_info": {
        "kind": "decode", "batch": 2, "num_heads": 8, "num_kv_heads": 2, "context": 100, "head_dim": 64,
        "bytes": 51200, "median_s": 1e-5, "ceiling_read_gbps": 3000.0, "ceiling_matmul_tflops": 800.0}}
    stray = {**engine["benchmarks"][0], "fullname": "bench/x.py::test_not_in_a_suite"}
    got = figures.suite_figures(engine["benchmarks"] + [kernel, stray], tmp_path, engine["machine_info"])
    assert [p.name for p in got] == ["kernels_roofline.png", "engine_throughput_vs_peer.png"]
    assert figures.suite_figures([stray], tmp_path / "none", engine["machine_info"]) == []
    # the scheduler suite names no figure, so its records get none
    sched = {"fullname": "bench/bench_scheduler.py::test_schedule_update[256]", "extra_info": kernel["extra_info"]}
    assert figures.suite_figures([sched], tmp_path / "none", {}) == []
