"""The GPU's theoretical bandwidth and L2 size from driver attributes: the arithmetic
by hand, both cuda-python layouts and every absent path through a fake driver (the
real one needs a GPU), and the record beside the measured read ceiling."""
from __future__ import annotations

import enum
import importlib.util
from types import ModuleType, SimpleNamespace

import pytest

from bench import gpu_spec as spec

H100_SXM = {"CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE": 2_619_000,      # kHz, as deviceQuery prints 2619 MHz
            "CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH": 5120,      # bits
            "CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE": 50 * 2**20}          # bytes


class Result(enum.IntEnum):
    CUDA_SUCCESS = 0
    CUDA_ERROR_NO_DEVICE = 100
    CUDA_ERROR_INVALID_VALUE = 1


def fake_driver(values: dict[str, int], init: Result = Result.CUDA_SUCCESS, load_error: bool = False) -> ModuleType:
    """The slice of cuda-python's driver API gpu_spec calls: (CUresult, value...) tuples."""
    codes = {name: 1000 + i for i, name in enumerate(values)}
    by_code = {codes[name]: v for name, v in values.items()}
    calls: list[str] = []

    def cu_init(flags: int) -> tuple:
        calls.append("cuInit")
        if load_error:
            raise RuntimeError("Failed to dlopen libcuda.so.1")
        return (init,)

    def get_attribute(code: int, device: str) -> tuple:
        assert device == "device-0"
        return (Result.CUDA_SUCCESS, by_code[code]) if code in by_code else (Result.CUDA_ERROR_INVALID_VALUE, 0)

    driver = ModuleType("fake_cuda_driver")
    driver.CUresult = Result
    driver.CUdevice_attribute = SimpleNamespace(**codes)
    driver.cuInit = cu_init
    driver.cuDeviceGet = lambda ordinal: (Result.CUDA_SUCCESS, f"device-{ordinal}")
    driver.cuDeviceGetAttribute = get_attribute
    driver.cuGetErrorName = lambda err: (Result.CUDA_SUCCESS, Result(err).name.encode())
    driver.calls = calls
    return driver


def test_theoretical_bandwidth_by_hand() -> None:
    # two transfers per clock, 5120 bits = 640 bytes each: 2 x 2.619e9 x 640 B/s
    assert spec.theoretical_bandwidth_gbps(2_619_000, 5120) == pytest.approx(3352.32)
    assert spec.theoretical_bandwidth_gbps(1_000, 8) == pytest.approx(2e-3)      # 2e6 B/s
    with pytest.raises(ValueError, match="must be positive"):
        spec.theoretical_bandwidth_gbps(0, 5120)


def test_record_through_the_driver() -> None:
    driver = fake_driver(H100_SXM)
    got = spec.gpu_spec(lambda: spec.cuda_python_reader(0, driver))
    assert got == {"memory_clock_khz": 2_619_000, "bus_width_bits": 5120, "l2_bytes": 50 * 2**20, "l2_mib": 50.0,
                   "theoretical_bandwidth_gbps": 3352.3, "source": "cuda-python cuDeviceGetAttribute"}
    assert driver.calls == ["cuInit"]


def test_both_module_layouts_newest_first() -> None:
    new, old = ModuleType("cuda.bindings.driver"), ModuleType("cuda.cuda")

    def importer(*installed: ModuleType):
        def import_module(name: str) -> ModuleType:
            for module in installed:
                if module.__name__ == name:
                    return module
            raise ModuleNotFoundError(f"No module named {name!r}")
        return import_module
    assert spec.driver_module(importer(old, new)) is new
    assert spec.driver_module(importer(old)) is old
    with pytest.raises(spec.Unavailable, match="neither cuda.bindings.driver nor cuda.cuda imports"):
        spec.driver_module(importer())


@pytest.mark.parametrize("driver, needle", [
    (fake_driver(H100_SXM, init=Result.CUDA_ERROR_NO_DEVICE), "cuInit failed: CUDA_ERROR_NO_DEVICE"),
    (fake_driver(H100_SXM, load_error=True), "CUDA driver cannot be loaded (Failed to dlopen"),
    (fake_driver({k: v for k, v in H100_SXM.items() if "L2" not in k}),
     "this cuda-python has no CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE"),
], ids=["no-device", "no-libcuda", "old-bindings"])
def test_absent_says_why(driver: ModuleType, needle: str) -> None:
    got = spec.gpu_spec(lambda: spec.cuda_python_reader(0, driver))
    assert list(got) == ["absent"] and needle in got["absent"]


def test_a_driver_reporting_no_clock_gives_no_bandwidth() -> None:
    got = spec.spec_from({**H100_SXM, "CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE": 0}.__getitem__)
    assert "theoretical_bandwidth_gbps" not in got and "memory clock 0 kHz" in got["absent"]
    assert got["l2_bytes"] == 50 * 2**20


def test_this_machine_records_a_spec_or_why_not() -> None:
    got = spec.gpu_spec()
    if importlib.util.find_spec("cuda") is None:
        assert "cuda-python is not installed" in got["absent"]
    else:   # with cuda-python: a device's figures, or the driver's reason there is none
        assert got.get("theoretical_bandwidth_gbps", 0) > 0 or got["absent"]


def test_beside_the_measured_read_ceiling() -> None:
    record = spec.spec_from(H100_SXM.__getitem__)
    got = spec.beside_ceilings(record, {"ceiling_read_gbps": 3186.0, "ceiling_copy_gbps": 3033.0})
    assert got["measured_read_share"] == pytest.approx(3186.0 / 3352.3, abs=1e-3)
    assert spec.beside_ceilings(record, None) == record                # the CPU suites: no ceilings
    assert spec.beside_ceilings({"absent": "x"}, {"ceiling_read_gbps": 1.0}) == {"absent": "x"}
