"""The conformance matrix plugin on a small suite of its own (run by a child pytest,
with and without xdist workers): axes from parameters and markers, outcome counts,
markdown and JSON; and the command line `pagedlm conform` builds."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.harness import matrix
from engine.entrypoints import cli_conform

REPO = Path(__file__).resolve().parent.parent

SUITE = '''
import pytest

@pytest.mark.parametrize("block_size", [8, 16])
@pytest.mark.parametrize("query_dtype", ["bf16", "fp32"])
def test_decode_like(query_dtype, block_size):
    assert block_size in (8, 16)

@pytest.mark.parametrize("kind", ["auto", "fp8"])
def test_cache_kind(kind):
    assert kind != "fp8", "a planted failure"

@pytest.mark.gpu
def test_needs_gpu():
    pass

@pytest.mark.component("sampler")
def test_marked_component():
    pytest.skip("skipped on purpose")
'''


def _run(tmp_path: Path, *extra: str) -> dict:
    (tmp_path / "test_tiny_matrix.py").write_text(SUITE)
    (tmp_path / "conftest.py").write_text(
        "import pytest\n"
        "def pytest_configure(config):\n"
        "    config.addinivalue_line('markers', 'gpu: needs CUDA')\n"
        "def pytest_collection_modifyitems(items):\n"
        "    for item in items:\n"
        "        if 'gpu' in item.keywords:\n"
        "            item.add_marker(pytest.mark.skip(reason='needs a CUDA device'))\n")
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "pytest", "test_tiny_matrix.py", "-q", "-p", "no:cacheprovider",
                          "-p", "bench.harness.matrix", f"--matrix-dir={out}", f"--junitxml={out}/junit.xml",
                          *extra], cwd=tmp_path, capture_output=True, text=True, timeout=180,
                         env={**{k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"},
                              "PYTHONPATH": str(REPO)})
    assert res.returncode == 1, res.stdout + res.stderr          # the planted failure
    assert "conformance matrix:" in res.stdout
    assert (out / "junit.xml").is_file() and (out / "matrix.md").is_file()
    return json.loads((out / "matrix.json").read_text())


def _cells(doc: dict) -> dict[tuple, tuple[int, int, int]]:
    return {(c["component"], c["backend"], c["dtype"], c["kv_dtype"], c["block_size"]):
            (c["passed"], c["failed"], c["skipped"]) for c in doc["cells"]}


WANT = {
    ("other (test_tiny_matrix)", "–", "bf16", "–", "8"): (1, 0, 0),
    ("other (test_tiny_matrix)", "–", "bf16", "–", "16"): (1, 0, 0),
    ("other (test_tiny_matrix)", "–", "fp32", "–", "8"): (1, 0, 0),
    ("other (test_tiny_matrix)", "–", "fp32", "–", "16"): (1, 0, 0),
    ("other (test_tiny_matrix)", "–", "–", "auto", "–"): (1, 0, 0),
    ("other (test_tiny_matrix)", "–", "–", "fp8", "–"): (0, 1, 0),
    ("other (test_tiny_matrix)", "cuda", "–", "–", "–"): (0, 0, 1),
    ("sampler", "–", "–", "–", "–"): (0, 0, 1),
}


def test_matrix_from_parameters_and_markers(tmp_path) -> None:
    doc = _run(tmp_path)
    assert doc["axes"] == ["component", "backend", "dtype", "kv_dtype", "block_size"]
    assert _cells(doc) == WANT
    md = (tmp_path / "out" / "matrix.md").read_text()
    assert md.startswith("**Conformance matrix**: 5 passed, 1 failed, 2 skipped")


def test_matrix_under_xdist_workers(tmp_path) -> None:
    pytest.importorskip("xdist")
    assert _cells(_run(tmp_path, "-n", "2")) == WANT


def test_components_of_the_conformance_files() -> None:
    class Item:
        def __init__(self, stem: str) -> None:
            self.path = Path(f"conformance/{stem}.py")

        def get_closest_marker(self, name: str):
            return None
    assert matrix.component_of(Item("test_kernel_paged_decode")) == "decode"
    assert matrix.component_of(Item("test_block_manager_swap")) == "block manager"
    assert matrix.component_of(Item("test_sampler_penalties")) == "sampler"
    assert matrix.component_of(Item("test_e2e_hf")) == "engine e2e"


def test_conform_command_line(tmp_path) -> None:
    def ns(**kw) -> argparse.Namespace:
        base = dict(gpu=False, profile=None, report=tmp_path, workers="auto", pytest_args=[])
        return argparse.Namespace(**{**base, **kw})
    cmd, env = cli_conform.command(ns(pytest_args=["-k", "decode"]), python="py")
    assert cmd[:6] == ["py", "-m", "pytest", "conformance", "-m", "not gpu"] and env["HYPOTHESIS_PROFILE"] == "ci"
    assert "bench.harness.matrix" in cmd and f"--matrix-dir={tmp_path}" in cmd and cmd[-2:] == ["-k", "decode"]
    cmd, env = cli_conform.command(ns(gpu=True, workers="0"), python="py")
    assert cmd[5] == "gpu or kernel" and env["HYPOTHESIS_PROFILE"] == "gpu" and "-n" not in cmd
    _, env = cli_conform.command(ns(gpu=True, profile="nightly"), python="py")
    assert env["HYPOTHESIS_PROFILE"] == "nightly"
