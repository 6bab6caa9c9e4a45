"""Fixtures for the GPU kernel benchmarks, and the machine they ran on.

CUDA stays optional here: the CPU benchmarks beside these (scheduler, prefix
cache) use this conftest too, and do not import torch at all (it costs seconds
per run, and the gate runs the scheduler suite ten times). `gpu`-marked items
under bench/ skip without a CUDA device, before any fixture touches the GPU.
"""
from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from bench.gpu_spec import beside_ceilings, gpu_spec

BENCH_DIR = Path(__file__).resolve().parent
CEILINGS_KEY = pytest.StashKey[dict]()
# Benchmark modules that import neither torch nor triton: collecting them needs no CUDA probe.
TORCH_FREE = ("bench_scheduler.py", "bench_prefix_cache.py")


@functools.cache
def cuda_available() -> bool:
    """torch.cuda.is_available(), imported on first need; without CUDA the Triton
    interpreter runs the kernels (the same rule as conformance/), which must be
    chosen before triton is first imported."""
    import torch
    available = torch.cuda.is_available()
    if not available:
        os.environ.setdefault("TRITON_INTERPRET", "1")
    return available


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("serving", "serving benchmarks (bench_engine_serving.py)")
    group.addoption("--serving-percentiles", default="50,99", metavar="P,P",
                    help="percentiles of TTFT / TPOT / ITL recorded and gated per run (default 50,99)")
    group.addoption("--serving-slos", default="", metavar="'ttft:MS tpot:MS'",
                    help="SLOs for goodput, e.g. 'ttft:500 tpot:300' (default: none, no goodput)")


@pytest.fixture(scope="session")
def serving_options(request: pytest.FixtureRequest) -> tuple[tuple[float, ...], dict[str, float]]:
    """(percentiles, SLOs in seconds) from --serving-percentiles / --serving-slos."""
    from bench.harness.serving import parse_percentiles, parse_slos
    try:
        return (parse_percentiles(request.config.getoption("--serving-percentiles")),
                parse_slos(request.config.getoption("--serving-slos")))
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped cleanly without one)")


class BenchModule(pytest.Module):
    """A benchmark module that probes CUDA (importing torch) just before it is imported,
    unless it is one of the TORCH_FREE ones: pytest visits every file of the folder,
    but imports only the ones it collects."""

    def _getobj(self):
        if self.path.name not in TORCH_FREE:
            cuda_available()  # before the module imports triton
        return super()._getobj()


def _is_bench_file(file_path: Path) -> bool:
    return file_path.suffix == ".py" and file_path.name.startswith("bench_") and file_path.parent == BENCH_DIR


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    """Collect bench/bench_*.py when `pytest bench` walks the folder (pytest's default
    patterns want test_*.py); a file named on the command line is collected already."""
    if _is_bench_file(file_path) and not parent.session.isinitpath(file_path):
        return BenchModule.from_parent(parent, path=file_path)
    return None


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    """A bench file named on the command line: the same lazy probe."""
    return BenchModule.from_parent(parent, path=module_path) if _is_bench_file(module_path) else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items
                 if "gpu" in item.keywords and BENCH_DIR in Path(str(item.fspath)).resolve().parents]
    if not gpu_items or cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function):
    """A launcher without the feature a timed call needs is a recorded skip, not an error
    and not a different measurement (bench/ours.py)."""
    try:
        return (yield)
    except Exception as exc:
        ours = sys.modules.get("bench.ours")  # only bench.ours raises it; not imported, not raised
        if ours is not None and isinstance(exc, ours.MissingFeature):
            pytest.skip(f"missing feature: {exc}")
        raise


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _nvidia_smi(query: str) -> list[str] | None:
    try:
        res = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    line = res.stdout.strip().splitlines()[0] if res.stdout.strip() else ""
    return [part.strip() for part in line.split(",")] if line else None


def _driver_version() -> str | None:
    got = _nvidia_smi("driver_version")
    return got[0] if got else None


def cpu_model() -> str | None:
    """The CPU's model name (/proc/cpuinfo on Linux, else what platform says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def gpu_info() -> dict[str, object] | None:
    """Name, driver, CUDA, SM count, memory and L2 of device 0; None without a GPU.
    Without torch imported (the CPU suites) it asks nvidia-smi for name and driver."""
    if "torch" not in sys.modules:
        got = _nvidia_smi("name,driver_version")
        return {"name": got[0], "driver": got[1] if len(got) > 1 else None} if got else None
    if not cuda_available():
        return None
    import torch
    props = torch.cuda.get_device_properties(0)
    return {
        "name": props.name,
        "driver": _driver_version(),
        "cuda": torch.version.cuda,
        "capability": f"{props.major}.{props.minor}",
        "sm_count": props.multi_processor_count,
        "memory_gib": round(props.total_memory / 1024**3, 1),
        "l2_mib": round(getattr(props, "L2_cache_size", 0) / 1024**2, 1),
    }


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    machine_info["cpu_model"] = cpu_model()
    machine_info["cpu_cores"] = os.cpu_count()
    machine_info["gpu"] = gpu_info()
    machine_info["torch"] = _version("torch")
    machine_info["triton"] = _version("triton")
    torch = sys.modules.get("torch")
    machine_info["cuda"] = torch.version.cuda if torch is not None else None
    ceilings = config.stash.get(CEILINGS_KEY, None)
    if ceilings is not None:
        machine_info["ceilings"] = ceilings
    # the driver's datasheet figures beside what this run measured ({"absent": why} without CUDA)
    machine_info["gpu_spec"] = beside_ceilings(gpu_spec(), ceilings)


def pytest_benchmark_update_commit_info(config: pytest.Config, commit_info: dict) -> None:
    """SOURCE_COMMIT (ci/gpu_suite.sh) names the tree a copied work tree was made from:
    a copy's own .git can be stale (the device machine's copy kept an older HEAD, so
    pytest-benchmark recorded that commit, "dirty")."""
    source = os.environ.get("SOURCE_COMMIT")
    if source:
        commit_info.update(id=source, dirty=False, source="SOURCE_COMMIT", git_seen=commit_info.get("id"))


@pytest.fixture(scope="session")
def l2_flush():
    from bench.timing import L2Flush
    return L2Flush("cuda")


@pytest.fixture(scope="session")
def ceilings(request: pytest.FixtureRequest, l2_flush) -> dict[str, object]:
    """Read / copy GB/s and bf16 matmul TFLOP/s, measured once per session on this GPU."""
    from bench.ceilings import measure_ceilings
    info = measure_ceilings(l2_flush).as_info()
    info["l2_flush"] = l2_flush.describe()
    request.config.stash[CEILINGS_KEY] = info
    print(f"\nceilings: read {info['ceiling_read_gbps']:.0f} GB/s ({info['ceiling_read_config']}), "
          f"copy {info['ceiling_copy_gbps']:.0f} GB/s, matmul {info['ceiling_matmul_tflops']:.0f} TFLOP/s")
    return info


@pytest.fixture(scope="session")
def write_flush_timer() -> Callable:
    """Like gpu_timer but flushing the L2 by a 256 MiB write, whose dirty lines the
    timed run then pays to write back (the common flush elsewhere; for comparison)."""
    from bench.timing import L2Flush, time_gpu
    return functools.partial(time_gpu, flush=L2Flush("cuda", mode="write"))


@pytest.fixture(scope="session")
def gpu_timer(l2_flush) -> Callable:
    """`gpu_timer(fn, **kw) -> Samples`: bench.timing.time_gpu with this session's L2 flush."""
    from bench.timing import time_gpu
    return functools.partial(time_gpu, flush=l2_flush)


@pytest.fixture(scope="session")
def bench_deadline() -> Callable[[], None]:
    """Skips a benchmark once BENCH_BUDGET_S seconds of this session are spent, so a
    capped run still ends and writes its JSON (the suite's time budget)."""
    budget = float(os.environ.get("BENCH_BUDGET_S", "0") or 0)
    start = time.monotonic()

    def check() -> None:
        if budget and time.monotonic() - start > budget:
            pytest.skip(f"benchmark time budget BENCH_BUDGET_S={budget:.0f}s spent")
    return check



@pytest.fixture(scope="session")
def flashinfer_workspace():
    """FlashInfer's float workspace for the session, or None where it cannot run
    (the benchmarks then record bench.peer_flashinfer.unavailable_reason())."""
    from bench.peer_flashinfer import unavailable_reason, workspace
    return None if unavailable_reason() else workspace("cuda")
