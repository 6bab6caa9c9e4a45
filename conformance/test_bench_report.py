"""bench/report.py on a small synthetic pytest-benchmark JSON: tables from extra_info,
goal verdicts computed from the figures, the README's marked section replaced
and nothing else touched, plots only where matplotlib exists."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from bench import report

CEIL = {"ceiling_read_gbps": 3167.0, "ceiling_copy_gbps": 3021.0, "ceiling_matmul_tflops": 789.0}


def _decode(dtype: str, batch: int, median_s: float, pct: float, **extra) -> dict:
    info = {"kind": "decode", "cache_dtype": dtype, "batch": batch, "context": 4096, "num_heads": 32,
            "num_kv_heads": 8, "head_dim": 128, "median_s": median_s, "gbps": pct * 31.67, "pct_read_ceiling": pct,
            "timing": "cuda-graph", **CEIL, **extra}
    return {"name": f"test_paged_decode[{dtype}-B{batch}]", "extra_info": info}


def _doc() -> dict:
    benches = [
        _decode("bf16", 64, 3.4e-4, 93.4, speedup_vs_flex=1.8, speedup_vs_gather=5.1, speedup_vs_flex_inplace=9.5,
                flex_kernel="flex decoding", speedup_vs_flashinfer_cuda_core=1.3, speedup_vs_flashinfer_fa2=1.03),
        _decode("bf16", 8, 6.0e-5, 61.2, speedup_vs_flex=1.2, speedup_vs_gather=3.0),
        _decode("fp8", 64, 1.8e-4, 90.0, speedup_vs_bf16=1.9, byte_ratio_vs_bf16=1.94),
        {"name": "test_paged_prefill[L4096]", "extra_info": {
            "kind": "prefill", "batch": 4, "seq_len": 4096, "num_heads": 32, "num_kv_heads": 32, "head_dim": 128,
            "median_s": 2.2e-3, "tflops": 250.0, "pct_matmul_ceiling": 31.7, "sdpa_tflops": 313.0,
            "speedup_vs_sdpa": 0.7987, "flashinfer_fa3_tflops": 500.0, "speedup_vs_flashinfer_fa3": 0.5,
            "kernel": "sm90", "triton_kernel_tflops": 200.4, "eager_median_s": 2.25e-3,
            "timing": "cuda-graph", **CEIL}},
        {"name": "test_write_kv[bf16]", "extra_info": {
            "kind": "write", "cache_dtype": "bf16", "num_tokens": 65536, "num_kv_heads": 8, "head_dim": 128,
            "median_s": 2.1e-4, "gbps": 2560.0, "pct_copy_ceiling": 84.7, "speedup_vs_torch": 2.5,
            "timing": "cuda-graph", **CEIL}},
    ]
    benches.append({"name": "test_launch_cost[decode-B64-L4096]", "extra_info": {
        "kind": "launch", "case": "decode-B64-L4096", "bare_launch_us": 10.0, "gpu_us": 249.0, "unchecked_us": 53.6,
        "unchecked_vs_bare": 5.36, "unchecked_workspace_us": 15.0, "unchecked_workspace_vs_bare": 1.5, "sync_us": 330.0, "checked_us": 334.4,
        "checked_over_sync_us": 4.4, "median_s": 5.36e-5, "timing": "host", **CEIL}})
    return {"machine_info": {"gpu": {"name": "NVIDIA H100 80GB HBM3", "driver": "580.159.04", "sm_count": 132},
                             "torch": "2.11.0", "triton": "3.6.0", "cuda": "13.0"},
            "commit_info": {"id": "abcdef0123456789"}, "datetime": "2026-11-28T10:00:00", "benchmarks": benches}


def _row(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(start))


def test_tables_and_goals_from_extra_info(tmp_path) -> None:
    (tmp_path / "results" / "h100").mkdir(parents=True)
    (tmp_path / "results" / "h100" / "bench_decode.json").write_text(json.dumps(_doc()))
    readme = tmp_path / "README.md"
    readme.write_text(f"# Benchmarks\n\nintro kept\n\n{report.BEGIN}\nstale table\n{report.END}\n\ntail kept\n")
    assert report.main(["--results", str(tmp_path / "results"), "--readme", str(readme),
                        "--plots", str(tmp_path / "plots")]) == 0
    text = readme.read_text()
    assert text.startswith("# Benchmarks\n\nintro kept\n") and text.endswith("tail kept\n")
    assert "stale table" not in text and text.count(report.BEGIN) == 1
    assert "### h100" in text and "NVIDIA H100 80GB HBM3" in text and "commit abcdef0123" in text
    assert "| test_paged_decode[bf16-B64] | 3167 | 3021 | 789 |" in text
    assert _row(text, "| 32/8/128 | bf16 | 64 | 4096 |") == (
        "| 32/8/128 | bf16 | 64 | 4096 | 340.0 | 2958 | 93.4 | 1.80× | 5.10× | 1.30× | 1.03× | – | – | cuda-graph |")
    assert _row(text, "| prefill | 32/32/128 | 4 | 4096 | 4096 |").endswith("| 500 | 0.50× | – | sm90 | 200 | 2.250 | cuda-graph |")
    assert _row(text, "| prefill B=4 L=4096 32/32/128 ≥ FlashInfer fa3").endswith("| 0.500× | missed |")
    assert _row(text, "| extend Q=512 over 3584 cached").endswith("| – | not measured |")
    assert _row(text, "| decode B=64 L=4096 32/8/128 ≥ 90%").endswith("| 93.4% | met |")
    assert _row(text, "| decode B=8 L=4096 32/8/128 ≥ 70%").endswith("| 61.2% | missed |")
    assert _row(text, "| decode headline ≥ 1.5×").endswith("| 1.800× | met |")
    assert _row(text, "| prefill B=4 L=4096 32/32/128").endswith("| 0.799× | missed |")  # 0.7987 < 0.8
    assert _row(text, "| prefill B=4 L=4096 32/8/128").endswith("| – | not measured |")
    assert _row(text, "| (for reference) headline vs FlexAttention in place").endswith("| 9.500× | – |")
    assert _row(text, "| write_kv bf16").endswith("| 84.7% | met |")
    assert _row(text, "| decode-B64-L4096 |") == (
        "| decode-B64-L4096 | 10.0 | 249.0 | 53.6 | 5.36× | 15.0 | 1.50× | 330.0 | 334.4 | +4.4 |")
    assert "| 1.90× | 98% of the byte ratio |" in text
    assert _row(text, "| int8 decode").endswith("| not measured |")
    has_mpl = importlib.util.find_spec("matplotlib") is not None
    assert (tmp_path / "plots" / "h100_decode.png").exists() == has_mpl
    assert ("h100_decode.png" in text) == has_mpl
    before = readme.read_text()
    report.main(["--results", str(tmp_path / "results"), "--readme", str(readme), "--no-plots"])
    assert readme.read_text().replace("\n![decode GB/s on h100](plots/h100_decode.png)\n", "") == \
        before.replace("\n![decode GB/s on h100](plots/h100_decode.png)\n", "")


def test_flat_folder_to_out_file(tmp_path) -> None:
    (tmp_path / "bench_decode.json").write_text(json.dumps(_doc()))
    (tmp_path / "machine.txt").write_text("not json, ignored")
    out = tmp_path / "report.md"
    assert report.main(["--results", str(tmp_path), "--out", str(out), "--no-plots"]) == 0
    text = out.read_text()
    assert text.startswith("### h100") and report.BEGIN not in text


def test_bad_input(tmp_path, capsys) -> None:
    (tmp_path / "bad.json").write_text("{}")
    assert report.main(["--results", str(tmp_path), "--out", str(tmp_path / "r.md")]) == 2
    assert "no 'benchmarks' list" in capsys.readouterr().err
    assert report.main(["--results", str(tmp_path / "nope"), "--out", str(tmp_path / "r.md")]) == 2


def test_flex_goal_needs_flex_decoding_kernel(tmp_path) -> None:
    """A Flex ratio measured against flex's general kernel (or an unrecorded one) proves nothing."""
    for kernel, verdict in [(None, "unproven: peer ran an unrecorded flex kernel"),
                            ("flex general (GQA ratio 3 is not a power of two)", "unproven: peer ran flex general")]:
        doc = _doc()
        info = doc["benchmarks"][0]["extra_info"]
        info.pop("flex_kernel")
        if kernel:
            info["flex_kernel"] = kernel
        (tmp_path / "bench_decode.json").write_text(json.dumps(doc))
        assert report.main(["--results", str(tmp_path), "--out", str(tmp_path / "r.md"), "--no-plots"]) == 0
        row = _row((tmp_path / "r.md").read_text(), "| decode headline ≥ 1.5×")
        assert "| 1.800× | " + verdict in row and "| met |" not in row


def test_missed_flex_goal_states_the_bound_flex_sets(tmp_path) -> None:
    """Flex at 340 µs on 1.0 GB reads 2941 GB/s = 92.9% of 3167: no kernel can be
    more than 1/0.929 = 1.077× faster, and the verdict says so."""
    doc = _doc()
    info = doc["benchmarks"][0]["extra_info"]
    info.update(speedup_vs_flex=1.004, bytes=1.0e9, flex_median_s=3.4e-4)
    doc["benchmarks"][1]["extra_info"]["flex_note"] = (
        "FlexAttention failed to compile at this size: AssertionError('Ternary expression')")
    (tmp_path / "bench_decode.json").write_text(json.dumps(doc))
    assert report.main(["--results", str(tmp_path), "--out", str(tmp_path / "r.md"), "--no-plots"]) == 0
    text = (tmp_path / "r.md").read_text()
    assert _row(text, "| decode headline ≥ 1.5×") == (
        "| decode headline ≥ 1.5× FlexAttention paged | 1.004× | missed: flex itself runs at 92.9% of the "
        "read ceiling, so no kernel can be more than 1.077× faster |")
    assert "FlexAttention did not run:\n- 32/8/128 B=8 L=4096: FlexAttention failed to compile" in text


def test_two_runs_of_one_problem_in_a_folder_are_an_error(tmp_path, capsys) -> None:
    """A goal must not depend on which of two JSON files is read first."""
    (tmp_path / "bench_decode.json").write_text(json.dumps(_doc()))
    (tmp_path / "bench_decode_again.json").write_text(json.dumps(_doc()))
    assert report.main(["--results", str(tmp_path), "--out", str(tmp_path / "r.md"), "--no-plots"]) == 2
    assert "2 decode records match cache_dtype=bf16, batch=64" in capsys.readouterr().err
    assert not (tmp_path / "r.md").exists()


def test_machine_line_says_when_the_tree_was_dirty() -> None:
    doc = _doc()
    assert report.machine_line([doc]).endswith("; commit abcdef0123")
    doc["commit_info"]["dirty"] = True
    assert report.machine_line([doc]).endswith("; commit abcdef0123 + uncommitted changes")


def test_source_commit_from_machine_txt_names_the_tree(tmp_path) -> None:
    """JSON from a copied tree with a stale .git: the suite's machine.txt beside it
    (SOURCE_COMMIT) names the commit; JSON that recorded its source keeps it."""
    doc = _doc()
    doc["commit_info"] = {"id": "f108934a34eb", "dirty": True}
    (tmp_path / "bench_decode.json").write_text(json.dumps(doc))
    (tmp_path / "machine.txt").write_text("nvidia-smi ...\n\ncommit af6b8ed3d625 (from SOURCE_COMMIT)\n")
    assert report.machine_line(report.load(tmp_path)).endswith("; commit af6b8ed3d6")
    doc["commit_info"] = {"id": "9ee7df4c4a0f", "dirty": False, "source": "SOURCE_COMMIT"}
    (tmp_path / "bench_decode.json").write_text(json.dumps(doc))
    assert report.machine_line(report.load(tmp_path)).endswith("; commit 9ee7df4c4a")


def test_write_flush_reference_row_and_flush_named(tmp_path) -> None:
    doc = _doc()
    b8 = next(b for b in doc["benchmarks"] if b["extra_info"].get("batch") == 8)
    b8["extra_info"].update(write_flush_pct_read_ceiling=55.5, l2_flush="read 256 MiB")
    (tmp_path / "h100").mkdir()
    (tmp_path / "h100" / "bench_decode.json").write_text(json.dumps(doc))
    text = report.render(report.find_devices(tmp_path), None, tmp_path)
    assert _row(text, "| (for reference) decode B=8 L=4096 32/8/128 after a 256 MiB write flush").endswith(
        "| 55.5% | – |")
    assert "L2 flushed (read 256 MiB, write 256 MiB) before each" in text
