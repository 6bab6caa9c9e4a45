"""`pagedlm memory`: its --help example commands, its agreement with reference.memory,
size parsing, and errors (exit 2, one line naming the argument, never a traceback)."""
from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.entrypoints.cli import main
from engine.core.model_shapes import preset
from engine.entrypoints.sizes import format_size, parse_size
from reference import memory as mem

GiB, MiB = 2**30, 2**20
REPO = Path(__file__).resolve().parents[1]
OPT13B_ARGS = ["memory", "--layers", "40", "--kv-heads", "40", "--head-dim", "128",
               "--dtype", "float16", "--block-size", "16", "--gpu-memory", "40GiB",
               "--weights", "26GiB", "--activations", "3GiB", "--overhead", "1GiB"]
SMOLLM_ARGS = ["memory", "--model", "smollm2-135m", "--gpu-memory", "80GiB",
               "--utilization", "0.9", "--tokens", "100", "--kv-dtype", "int8"]


def run_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def run_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Traceback" not in captured.err
    assert captured.err.count("\n") == 1, captured.err     # one line
    return captured.err


def test_opt13b_on_a_40gb_card_json(capsys: pytest.CaptureFixture[str]) -> None:
    r = run_json(capsys, OPT13B_ARGS)
    assert r["bytes_per_token"] == 819_200
    assert r["bytes_per_block"] == 13_107_200
    assert r["kv_budget"] == 10 * GiB
    assert r["num_blocks"] == 819 and r["token_capacity"] == 13_104
    assert r["weights_estimated"] is False and "blocks_needed" not in r


def test_smollm2_int8_example_json(capsys: pytest.CaptureFixture[str]) -> None:
    r = run_json(capsys, SMOLLM_ARGS)
    shape = preset("smollm2-135m")
    per_token = 2 * 30 * 3 * (64 * 1 + 4)          # int8 values + float32 scales
    weights = shape.num_params * 2                  # bfloat16 checkpoint, estimated
    budget = 80 * GiB * 9 // 10 - weights
    assert r["bytes_per_token"] == per_token and r["bytes_per_block"] == 16 * per_token
    assert r["weights"] == weights and r["weights_estimated"] is True
    assert r["num_blocks"] == budget // (16 * per_token)
    assert r["token_capacity"] == 16 * r["num_blocks"]
    assert r["blocks_needed"] == 7 and r["wasted_slots"] == 12
    assert r["waste_fraction"] == pytest.approx(12 / 112, abs=0)
    assert r["sequences_that_fit"] == r["num_blocks"] // 7


def test_opt13b_table_shows_the_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(OPT13B_ARGS) == 0
    out = capsys.readouterr().out
    for text in ("13,107,200 B (12.50 MiB)", "819,200 B", "10.00 GiB", "819", "13,104 tokens"):
        assert text in out
    value_columns = {re.match(r"(.*?\S)\s{2,}\S", line).end() - 1 for line in out.splitlines()}
    assert len(value_columns) == 1   # labels padded to one aligned value column


def test_estimated_weights_are_flagged_in_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(SMOLLM_ARGS) == 0
    out = capsys.readouterr().out
    assert "ESTIMATE" in out and f"{preset('smollm2-135m').num_params:,} params" in out
    assert "7 blocks, 12 slots wasted" in out and "10.71%" in out


def test_model_from_a_local_hf_directory(capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    config = {"model_type": "llama", "num_hidden_layers": 4, "num_attention_heads": 8,
              "num_key_value_heads": 2, "hidden_size": 256, "intermediate_size": 512,
              "vocab_size": 1000, "torch_dtype": "float16"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    r = run_json(capsys, ["memory", "--model", str(tmp_path), "--gpu-memory", "1GiB",
                          "--weights", "100MiB"])
    assert r["bytes_per_token"] == mem.bytes_per_token(4, 2, 32, 2)
    assert r["kv_budget"] == GiB - 100 * MiB and r["weights_estimated"] is False


@pytest.mark.parametrize("argv, needle", [
    (["memory", "--model", "opt-125m"], "--gpu-memory"),
    (["memory", "--model", "opt-125m", "--gpu-memory", "12XB"], "--gpu-memory"),
    (["memory", "--model", "opt-125m", "--gpu-memory", "12XB"], "XB"),
    (["memory", "--model", "opt-125m", "--gpu-memory", "lots"], "--gpu-memory"),
    (["memory", "--model", "no-such-model", "--gpu-memory", "1GiB"], "no-such-model"),
    (["memory", "--model", "opt-125m", "--gpu-memory", "1GiB", "--dtype", "fp4"], "--dtype"),
    (["memory", "--model", "opt-125m", "--gpu-memory", "1GiB", "--kv-dtype", "fp4"], "--kv-dtype"),
    ([*OPT13B_ARGS[:-2], "--overhead", "12GiB"], "no memory left for the KV cache"),
    (["memory", "--model", "opt-125m", "--gpu-memory", "1MiB"], "weights"),
    (["memory", "--layers", "4", "--gpu-memory", "1GiB", "--weights", "0"], "--kv-heads"),
    (["memory", "--layers", "4", "--kv-heads", "4", "--head-dim", "64", "--gpu-memory", "1GiB"],
     "--weights"),
    (["memory", "--model", "opt-125m", "--layers", "4", "--gpu-memory", "1GiB"], "--layers"),
    (["memory", "--model", "opt-125m", "--gpu-memory", "1GiB", "--utilization", "1.5"],
     "--utilization"),
    (["memory", "--model", "opt-125m", "--gpu-memory", "1GiB", "--block-size", "0"],
     "--block-size"),
    (["memory", "--model", "opt-125m", "--gpu-memory", "1GiB", "--tokens", "ten"], "--tokens"),
    (["memory", "--model", "opt-125m", "--gpu-memory", "1GiB", "--weights=-1GiB"], "--weights"),
    ([], "<command>"),
])
def test_errors_exit_2_with_one_line_naming_the_problem(
        capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    err = run_error(capsys, argv)
    assert "error:" in err and needle in err


def test_negative_budget_message_names_the_culprit(capsys: pytest.CaptureFixture[str]) -> None:
    err = run_error(capsys, [*OPT13B_ARGS[:-6], "--weights", "41GiB"])
    assert "largest term: weights" in err


@pytest.mark.parametrize("text, expected", [
    ("40GiB", 40 * GiB), ("40gib", 40 * GiB), ("40 GIB", 40 * GiB), ("12.5GiB", 25 * GiB // 2),
    ("512MiB", 512 * MiB), ("1KiB", 1024), ("2KB", 2000), ("1.5GB", 1_500_000_000),
    ("3mb", 3_000_000), ("1TiB", 2**40), ("1048576", 2**20), ("10B", 10), (".5KiB", 512),
])
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["12XB", "", "GiB", "-1GiB", "1.2.3GB", "1e9", "12 G iB"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="size|unit"):
        parse_size(text)


@given(n=st.integers(0, 10**6), unit=st.sampled_from(["B", "KB", "MB", "GB", "KiB", "MiB", "GiB"]),
       upper=st.booleans())
def test_parse_size_scales_by_the_unit(n: int, unit: str, upper: bool) -> None:
    factor = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9,
              "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[unit]
    assert parse_size(f"{n}{unit.upper() if upper else unit.lower()}") == n * factor


def test_format_size() -> None:
    assert format_size(13_107_200) == "12.50 MiB"
    assert format_size(10 * GiB) == "10.00 GiB"
    assert format_size(1023) == "1023 B" and format_size(1024) == "1.00 KiB"


@given(layers=st.integers(1, 128), kv_heads=st.integers(1, 64),
       head_dim=st.sampled_from([32, 64, 80, 96, 128, 256]),
       kv_dtype=st.sampled_from(sorted(mem.DTYPE_BYTES)), block_size=st.integers(1, 64),
       gpu_gib=st.integers(1, 192), util_pct=st.integers(1, 100),
       weights=st.integers(0, 2**30), activations=st.integers(0, 2**28),
       tokens=st.integers(1, 100_000))
def test_json_agrees_with_reference_memory(
        layers: int, kv_heads: int, head_dim: int, kv_dtype: str, block_size: int,
        gpu_gib: int, util_pct: int, weights: int, activations: int, tokens: int) -> None:
    util = f"{util_pct / 100:g}"
    argv = ["memory", "--layers", str(layers), "--kv-heads", str(kv_heads), "--head-dim",
            str(head_dim), "--kv-dtype", kv_dtype, "--block-size", str(block_size),
            "--gpu-memory", f"{gpu_gib}GiB", "--utilization", util, "--weights", str(weights),
            "--activations", f"{activations}B", "--tokens", str(tokens), "--json"]
    per_token = mem.bytes_per_token(layers, kv_heads, head_dim, mem.dtype_bytes(kv_dtype),
                                    mem.scale_bytes_per_head_for(kv_dtype))
    per_block = mem.bytes_per_block(per_token, block_size)
    out, err = io.StringIO(), io.StringIO()   # not capsys: Hypothesis would share one fixture
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            budget = mem.kv_budget(gpu_gib * GiB, util, weights, activations, 0)
        except ValueError:   # the parts do not fit: the CLI must say so and exit 2
            with pytest.raises(SystemExit) as info:
                main(argv)
            assert info.value.code == 2 and "no memory left" in err.getvalue()
            return
        assert main(argv) == 0
    r = json.loads(out.getvalue())
    blocks = mem.num_blocks_in_budget(budget, per_block)
    assert (r["bytes_per_token"], r["bytes_per_block"], r["kv_budget"]) == (
        per_token, per_block, budget)
    assert (r["num_blocks"], r["token_capacity"]) == (blocks, mem.token_capacity(blocks, block_size))
    assert r["blocks_needed"] == mem.blocks_needed(tokens, block_size)
    assert r["waste_fraction"] == float(mem.waste_fraction(tokens, block_size))


def test_installed_console_script_help() -> None:
    script = Path(sys.executable).with_name("pagedlm")
    assert script.exists(), "the pagedlm console script is not installed (pip install -e .)"
    done = subprocess.run([str(script), "memory", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "examples:" in done.stdout and "819 blocks = 13,104 tokens" in done.stdout


def test_python_dash_m_engine_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "engine.entrypoints.cli", *OPT13B_ARGS, "--json"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["num_blocks"] == 819


def test_memory_command_does_not_import_torch() -> None:
    code = ("import sys, contextlib, io\n"
            "from engine.entrypoints.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    assert main(sys.argv[1:]) == 0\n"
            "assert 'torch' not in sys.modules, 'pagedlm memory imported torch'\n")
    done = subprocess.run([sys.executable, "-c", code, *SMOLLM_ARGS], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
