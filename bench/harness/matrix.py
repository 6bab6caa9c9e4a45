"""The conformance matrix, as a pytest plugin: `pytest -p bench.harness.matrix --matrix-dir DIR`.

Rows are components (decode, prefill, write_kv, copy/swap, block manager, scheduler,
memory math, engine e2e, sampler, ...), columns backend x dtype x KV dtype x block
size, cells pass / fail / skip counts; written as DIR/matrix.md and DIR/matrix.json
at the end of the session (pytest's own --junitxml beside them serves CI tools).

The axes come from what pytest knows of each test: its parameters (callspec:
backend, dtype or query_dtype, kind / cache_kind / cache_dtype / kv_dtype,
block_size) and markers (gpu, kernel, and `component(name)` where a test names its
own). "–" in a column: not a parameter of that test (fixed, or drawn inside by
Hypothesis). A test's component is its module's, from the table below, unless a
`component` marker says otherwise. Works under pytest-xdist: workers attach the
axes to each report (user_properties), the controller counts and writes.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

KEY = "matrix_axes"
AXES = ("backend", "dtype", "kv_dtype", "block_size")
PARAMS = {"backend": ("backend", "attn_backend", "attention_backend"),
          "dtype": ("dtype", "query_dtype", "model_dtype"),
          "kv_dtype": ("kv_dtype", "cache_dtype", "cache_kind", "kind"),
          "block_size": ("block_size",)}
# module -> component (the conformance files' one job each)
COMPONENTS = {
    "test_kernel_paged_decode": "decode", "test_kernel_paged_prefill": "prefill",
    "test_kernel_prefill_validation": "prefill", "test_kernel_write_kv": "write_kv",
    "test_kernel_copy_swap": "copy/swap", "test_kernel_validation": "kernel launchers",
    "test_kernel_compile": "kernel launchers", "test_kernel_conversions": "kernel launchers",
    "test_block_manager_examples": "block manager", "test_block_manager_stateful": "block manager",
    "test_block_manager_swap": "block manager", "test_prefix_cache": "block manager",
    "test_scheduler_examples": "scheduler", "test_scheduler_properties": "scheduler",
    "test_memory_math": "memory math", "test_memory_cli": "memory math", "test_model_shapes": "memory math",
    "test_reference_attention": "reference oracles",
}
PREFIXES = (("test_sampl", "sampler"), ("test_e2e", "engine e2e"), ("test_engine", "engine e2e"),
            ("test_llm", "engine e2e"), ("test_model", "model"), ("test_torch_backend", "attention backends"),
            ("test_attention", "attention backends"), ("test_harness", "bench harness"),
            ("test_bench", "bench harness"), ("test_conform", "bench harness"), ("test_scheduler", "scheduler"),
            ("test_block", "block manager"), ("test_kernel", "kernel launchers"))
DTYPE_NAMES = {"torch.bfloat16": "bf16", "torch.float16": "fp16", "torch.float32": "fp32",
               "torch.float8_e4m3fn": "fp8", "torch.int8": "int8", "torch.float64": "fp64"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--matrix-dir", default=None, metavar="DIR",
                     help="write the conformance matrix (matrix.md, matrix.json) into DIR")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "component(name): the conformance-matrix row of a test")
    folder = config.getoption("--matrix-dir")
    if folder is not None and not hasattr(config, "workerinput"):  # xdist workers only attach axes
        config.pluginmanager.register(Recorder(config, Path(folder)), "pagedlm-matrix-recorder")


def component_of(item: pytest.Item) -> str:
    marker = item.get_closest_marker("component")
    if marker is not None and marker.args:
        return str(marker.args[0])
    stem = item.path.stem
    if stem in COMPONENTS:
        return COMPONENTS[stem]
    return next((c for prefix, c in PREFIXES if stem.startswith(prefix)), f"other ({stem})")


def _value(v: object) -> str:
    text = str(v)
    return DTYPE_NAMES.get(text, text)


def axes_of(item: pytest.Item, cuda: bool) -> dict[str, str]:
    params = getattr(getattr(item, "callspec", None), "params", {})
    out = {"component": component_of(item)}
    for axis, names in PARAMS.items():
        out[axis] = next((_value(params[n]) for n in names if n in params), "–")
    if out["backend"] == "–":
        if item.get_closest_marker("gpu") is not None:
            out["backend"] = "cuda"
        elif item.get_closest_marker("kernel") is not None:
            out["backend"] = "triton" if cuda else "triton-interpreter"
    return out


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Attach each test's axes to it, so its reports carry them (to the xdist controller too)."""
    import sys
    torch = sys.modules.get("torch")  # conformance/conftest.py imports it; no import of our own
    cuda = bool(torch is not None and torch.cuda.is_available())
    for item in items:
        item.user_properties.append((KEY, json.dumps(axes_of(item, cuda))))


class Tally:
    """Outcome per test id from its phase reports: failed beats skipped beats passed."""

    def __init__(self) -> None:
        self.axes: dict[str, dict[str, str]] = {}
        self.outcome: dict[str, str] = {}

    def add(self, report: pytest.TestReport) -> None:
        props = dict(report.user_properties)
        if KEY not in props:
            return
        self.axes[report.nodeid] = json.loads(props[KEY])
        now = self.outcome.get(report.nodeid)
        if report.failed:
            self.outcome[report.nodeid] = "failed"
        elif report.skipped and now != "failed":
            self.outcome[report.nodeid] = "skipped"
        elif report.passed and report.when == "call" and now is None:
            self.outcome[report.nodeid] = "passed"

    def cells(self) -> list[dict]:
        counts: Counter = Counter()
        for nodeid, outcome in self.outcome.items():
            a = self.axes[nodeid]
            counts[(a["component"], *(a[x] for x in AXES), outcome)] += 1
        keys = sorted({k[:-1] for k in counts})
        return [{"component": k[0], **dict(zip(AXES, k[1:])),
                 **{o: counts[(*k, o)] for o in ("passed", "failed", "skipped")}} for k in keys]


def render(cells: list[dict]) -> str:
    """Markdown: totals per component, then the matrix (columns: the combinations present)."""
    comps = sorted({c["component"] for c in cells})
    total = {o: sum(c[o] for c in cells) for o in ("passed", "failed", "skipped")}
    lines = [f"**Conformance matrix**: {total['passed']} passed, {total['failed']} failed, "
             f"{total['skipped']} skipped (cells: passed/failed/skipped; –: not a parameter of the test).", "",
             "| component | passed | failed | skipped |", "|---|---|---|---|"]
    for comp in comps:
        mine = [c for c in cells if c["component"] == comp]
        lines.append(f"| {comp} | " + " | ".join(str(sum(c[o] for c in mine)) for o in ("passed", "failed", "skipped"))
                     + " |")
    columns = sorted({tuple(c[a] for a in AXES) for c in cells})
    lines += ["", "| component | " + " | ".join(" · ".join(col) for col in columns) + " |",
              "|---|" + "---|" * len(columns)]
    for comp in comps:
        row = []
        for col in columns:
            hit = [c for c in cells if c["component"] == comp and tuple(c[a] for a in AXES) == col]
            row.append("" if not hit else "/".join(str(sum(c[o] for c in hit)) for o in ("passed", "failed", "skipped")))
        lines.append(f"| {comp} | " + " | ".join(row) + " |")
    lines += ["", "Columns: backend · dtype · KV dtype · block size."]
    return "\n".join(lines) + "\n"


def write(cells: list[dict], folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    md, js = folder / "matrix.md", folder / "matrix.json"
    md.write_text(render(cells))
    js.write_text(json.dumps({"axes": ["component", *AXES], "cells": cells}, indent=1) + "\n")
    return md, js


class Recorder:
    """Counts reports where they all arrive (the xdist controller, or the only process)
    and writes the matrix at the end; registered by pytest_configure when --matrix-dir is given."""

    def __init__(self, config: pytest.Config, folder: Path) -> None:
        self.config, self.folder, self.tally = config, folder, Tally()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.tally.add(report)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        md, js = write(self.tally.cells(), self.folder)
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"conformance matrix: {md} and {js}")
