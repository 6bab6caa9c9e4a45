"""The model dtype from the `dtype` engine argument, the config and the device.

"auto" takes the config's dtype (float32 when it names none), with two device
rules, each stated in the returned reason so the runner can log it:
- CPU: bfloat16 (and float16) run as float32 unless the CPU has native bf16
  arithmetic (x86 avx512_bf16 / amx_bf16, Arm bf16): torch's CPU matmuls on
  16-bit types are emulated and several times slower than float32 without it.
  float16 becomes bfloat16 where bf16 is fast (vLLM's CPU rule).
- CUDA: bfloat16 becomes float16 on a GPU without bf16 support.
An explicit "float32", "float16" or "bfloat16" is obeyed on the CPU (float16 and
bfloat16 work there, slowly; tests use them); on a CUDA device without bf16,
"bfloat16" is a ValueError.
"""
from __future__ import annotations

import torch

DTYPE_NAMES = ("auto", "float32", "float16", "bfloat16")
_BY_NAME = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_FAST_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_has_fast_bf16(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
    """True when the CPU flags list native bf16 arithmetic. False where there is
    no /proc/cpuinfo (macOS, Windows): float32 is the safe choice there."""
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features") and _FAST_BF16_FLAGS & set(value.split()):
                    return True
    except OSError:
        return False
    return False


def config_dtype(config: object) -> torch.dtype:
    """The dtype a transformers config names (`dtype`, or the older `torch_dtype`);
    float32 when it names none."""
    # transformers 5 names it `dtype` (reading `torch_dtype` there warns); 4.x `torch_dtype`.
    value = config.dtype if hasattr(config, "dtype") else getattr(config, "torch_dtype", None)
    if value is None:
        return torch.float32
    if isinstance(value, torch.dtype):
        dtype = value
    else:
        dtype = _BY_NAME.get(str(value).removeprefix("torch."))
    if dtype not in _BY_NAME.values():
        raise ValueError(f"config dtype {value!r} is not one of {tuple(_BY_NAME)}")
    return dtype


def resolve_dtype(dtype: str, config: object, device: torch.device | str,
                  cpuinfo_path: str = "/proc/cpuinfo") -> tuple[torch.dtype, str]:
    """(model dtype, a one-line reason for the log) for the `dtype` engine argument."""
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {DTYPE_NAMES}, got {dtype!r}")
    device = torch.device(device)
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, got {str(device)!r}")
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    if dtype != "auto":
        chosen = _BY_NAME[dtype]
        if chosen == torch.bfloat16 and device.type == "cuda" and not cuda_bf16:
            raise ValueError("dtype='bfloat16' is not supported by this GPU; pass dtype='float16' or 'float32'")
        return chosen, f"dtype {dtype} as requested"
    wanted = config_dtype(config)
    name = str(wanted).removeprefix("torch.")
    if device.type == "cpu" and wanted != torch.float32:
        if not cpu_has_fast_bf16(cpuinfo_path):
            return torch.float32, (f"config dtype {name}; CPU 16-bit matmuls are slow without native "
                                   "bf16 (no avx512_bf16/amx_bf16 flag here), running float32")
        if wanted == torch.float16:
            return torch.bfloat16, "config dtype float16; CPU float16 is slow, running bfloat16 (native bf16 here)"
    if device.type == "cuda" and wanted == torch.bfloat16 and not cuda_bf16:
        return torch.float16, "config dtype bfloat16; this GPU lacks bf16, running float16"
    return wanted, f"dtype {name} from the config"
