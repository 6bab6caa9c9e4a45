"""Shared pytest set-up: Hypothesis profiles, GPU skipping, an optional GPU memory log."""
from __future__ import annotations

import gc
import os
import sys

import pytest


def _cuda_available() -> bool:
    """Whether torch sees a CUDA device, without importing torch where no NVIDIA
    driver is loaded: the torch-free conformance must run where torch is absent,
    and the CPU machines need not pay torch's import."""
    if not any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl",
                                           "/dev/dxg")):
        return False
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


CUDA = _cuda_available()

# Triton kernels run through the interpreter on machines without a GPU; the
# variable must be set before triton is first imported.
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

from hypothesis import HealthCheck, settings  # noqa: E402

# ci: derandomised and bounded so a CPU run is repeatable and short.
settings.register_profile(
    "ci", derandomize=True, deadline=None, max_examples=30, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "dev", deadline=None, max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)
# gpu: full sizes on a CUDA device.
settings.register_profile(
    "gpu", derandomize=True, deadline=None, max_examples=20, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# memcheck: the GPU subset under compute-sanitizer (ci/memcheck_conformance.py): every
# kernel path at full size, few examples, since each one runs ~10x slower there and
# frees memory memcheck may hold on to.
settings.register_profile(
    "memcheck", derandomize=True, deadline=None, max_examples=9, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# nightly: many examples, the example database kept so failures replay.
settings.register_profile(
    "nightly", deadline=None, max_examples=1000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kernel: a test of the Triton kernels (conformance/test_kernel_*.py): through "
                            "the interpreter on CPU, at full size on a GPU; `-m 'gpu or kernel'` is the GPU subset")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name.startswith("test_kernel_"):
            item.add_marker(pytest.mark.kernel)
    if CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _return_gpu_memory():
    """On a GPU, hand what a test freed back to the device: torch's allocator would
    keep a multi-GiB cache reserved, out of reach of the tests in other workers."""
    yield
    torch = sys.modules.get("torch") if CUDA else None   # nothing to return if unused
    if torch is not None and torch.cuda.is_initialized():
        gc.collect()
        torch.cuda.empty_cache()


def pytest_runtest_logfinish(nodeid: str, location: tuple) -> None:
    """With PAGEDLM_GPU_MEMORY_LOG=path (set by ci/memcheck_conformance.py), append the
    device's free memory and torch's own share after each test: tells memory a test
    leaked (torch holds it) from memory the process lost elsewhere (free drops alone)."""
    path = os.environ.get("PAGEDLM_GPU_MEMORY_LOG")
    torch = sys.modules.get("torch") if CUDA else None
    if not path or torch is None or not torch.cuda.is_initialized():
        return
    free, _ = torch.cuda.mem_get_info()
    with open(path, "a") as log:
        log.write(f"{nodeid}\t{free >> 20}\t{torch.cuda.memory_allocated() >> 20}\t"
                  f"{torch.cuda.memory_reserved() >> 20}\t{os.getpid()}\n")
