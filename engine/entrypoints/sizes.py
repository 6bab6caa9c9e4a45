"""Byte sizes for people: parse "40GiB" / "12.5 GB" / "1024", and print 13107200 as "12.50 MiB"."""
from __future__ import annotations

import re
from fractions import Fraction
from types import MappingProxyType
from typing import Mapping

# Units are case-insensitive; binary (KiB…) and decimal (KB…) are both accepted.
UNITS: Mapping[str, int] = MappingProxyType({
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
})
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*", re.IGNORECASE)
_BINARY = ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"))


def parse_size(text: str) -> int:
    """Bytes in `text`: a non-negative number with an optional unit (B, KB, MB, GB, TB,
    KiB, MiB, GiB, TiB). Decimals are allowed; the result is rounded to a whole byte."""
    match = _SIZE_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a size (examples: 40GiB, 512MiB, 12.5GB, 1048576)")
    number, unit = match.groups()
    factor = UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(f"{text!r}: unknown unit {unit!r} "
                         f"(use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)")
    return round(Fraction(number) * factor)


def format_size(num_bytes: int) -> str:
    """`num_bytes` in the largest binary unit it reaches, two decimals ("10.00 GiB")."""
    for factor, unit in _BINARY:
        if abs(num_bytes) >= factor:
            return f"{num_bytes / factor:.2f} {unit}"
    return f"{num_bytes} B"
