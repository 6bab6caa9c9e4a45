"""The KV cache dtypes the benchmarks, sweeps and sanitizer runs take by name (one table)."""
from __future__ import annotations

import torch

CACHE_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp8": torch.float8_e4m3fn, "int8": torch.int8}


def cache_dtypes(*names: str) -> dict[str, torch.dtype]:
    """A subset of CACHE_DTYPES, in the order given; ValueError names an unknown one."""
    unknown = [n for n in names if n not in CACHE_DTYPES]
    if unknown:
        raise ValueError(f"cache dtype {unknown[0]!r} is not one of {sorted(CACHE_DTYPES)}")
    return {n: CACHE_DTYPES[n] for n in names}
