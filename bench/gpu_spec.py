"""The GPU's datasheet limits as its driver states them, recorded beside the measured ceilings.

Through cuda-python's driver API (`cuDeviceGetAttribute`): the peak memory clock
(kHz), the global memory bus width (bits) and the L2 cache size (bytes). The
theoretical bandwidth is 2 x clock x bus width / 8 bytes per second (two transfers
per clock: the figure NVIDIA's deviceQuery prints). A machine without cuda-python,
without a driver or without a device gets a record saying which, never an error:
the CPU suites run the same machine-info hook.

The driver is reached through two injectable seams, so the arithmetic, both
cuda-python layouts (`cuda.bindings.driver`, and the older `cuda.cuda`) and every
absent path are tested on a CPU with fakes.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Callable

# The driver attribute behind each recorded figure.
ATTRIBUTES = {
    "memory_clock_khz": "CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE",
    "bus_width_bits": "CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH",
    "l2_bytes": "CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE",
}
# Newest layout first: cuda-python 12.6 moved the driver bindings to cuda.bindings.driver.
DRIVER_MODULES = ("cuda.bindings.driver", "cuda.cuda")

AttributeReader = Callable[[str], int]   # a CU_DEVICE_ATTRIBUTE_* name -> its value on the device


class Unavailable(Exception):
    """Why the driver's attributes cannot be read here (the record's `absent` text)."""


def theoretical_bandwidth_gbps(memory_clock_khz: int, bus_width_bits: int) -> float:
    """Peak DRAM bandwidth in GB/s (1e9 bytes/s) of a double-data-rate bus."""
    if memory_clock_khz <= 0 or bus_width_bits <= 0:
        raise ValueError(f"memory clock ({memory_clock_khz} kHz) and bus width ({bus_width_bits} bits) "
                         "must be positive")
    return 2 * memory_clock_khz * 1e3 * bus_width_bits / 8 / 1e9


def spec_from(read: AttributeReader) -> dict[str, object]:
    """The record of one device, from its attributes."""
    values = {key: int(read(attr)) for key, attr in ATTRIBUTES.items()}
    clock, bus = values["memory_clock_khz"], values["bus_width_bits"]
    if clock <= 0 or bus <= 0:  # a driver that does not report them (0): no figure rather than 0 GB/s
        return {"absent": f"the driver reports memory clock {clock} kHz and bus width {bus} bits", **values}
    return {**values,
            "l2_mib": round(values["l2_bytes"] / 2**20, 1),
            "theoretical_bandwidth_gbps": round(theoretical_bandwidth_gbps(clock, bus), 1),
            "source": "cuda-python cuDeviceGetAttribute"}


def driver_module(import_module: Callable[[str], ModuleType] = importlib.import_module) -> ModuleType:
    """cuda-python's driver bindings, in whichever layout is installed."""
    for name in DRIVER_MODULES:
        try:
            return import_module(name)
        except ImportError:
            continue
    raise Unavailable(f"cuda-python is not installed (neither {' nor '.join(DRIVER_MODULES)} imports; "
                      "pip install 'pagedlm[cuda]')")


def _checked(driver: ModuleType, call: str, result: tuple) -> tuple:
    """The values after a driver call's CUresult; Unavailable names the call and the error."""
    err, *values = result
    if err != driver.CUresult.CUDA_SUCCESS:
        got = driver.cuGetErrorName(err)
        name = got[1].decode() if got[0] == driver.CUresult.CUDA_SUCCESS else str(err)
        raise Unavailable(f"{call} failed: {name}")
    return tuple(values)


def cuda_python_reader(device: int = 0, driver: ModuleType | None = None) -> AttributeReader:
    """An attribute reader of `device` through the CUDA driver (no context is created)."""
    driver = driver_module() if driver is None else driver
    try:
        _checked(driver, "cuInit", driver.cuInit(0))
        (handle,) = _checked(driver, f"cuDeviceGet({device})", driver.cuDeviceGet(device))
    except (RuntimeError, OSError) as exc:  # the bindings load libcuda on first call
        raise Unavailable(f"the CUDA driver cannot be loaded ({exc})") from exc

    def read(attr: str) -> int:
        code = getattr(driver.CUdevice_attribute, attr, None)
        if code is None:
            raise Unavailable(f"this cuda-python has no {attr}")
        (value,) = _checked(driver, f"cuDeviceGetAttribute({attr})", driver.cuDeviceGetAttribute(code, handle))
        return int(value)
    return read


def gpu_spec(open_reader: Callable[[], AttributeReader] = cuda_python_reader) -> dict[str, object]:
    """The device's record, or {"absent": why} where it cannot be read."""
    try:
        return spec_from(open_reader())
    except Unavailable as exc:
        return {"absent": str(exc)}


def beside_ceilings(spec: dict[str, object], ceilings: dict[str, object] | None) -> dict[str, object]:
    """`spec` with the measured read ceiling as a share of the theoretical bandwidth (where both exist)."""
    theory, read = spec.get("theoretical_bandwidth_gbps"), (ceilings or {}).get("ceiling_read_gbps")
    if not isinstance(theory, (int, float)) or not isinstance(read, (int, float)):
        return dict(spec)
    return {**spec, "measured_read_share": round(read / theory, 3)}
