"""Command-line pieces shared by the launch sweeps (bench/sweep_decode.py, bench/sweep_prefill.py)."""
from __future__ import annotations

import argparse
import sys

import torch


def knob_list(text: str, name: str) -> list[int | None]:
    """'auto,4,8' -> [None, 4, 8] (None lets the heuristic choose)."""
    values: list[int | None] = []
    for item in text.split(","):
        item = item.strip()
        if item == "auto":
            values.append(None)
            continue
        try:
            value = int(item)
        except ValueError:
            raise SystemExit(f"--{name}: '{item}' is neither 'auto' nor an integer") from None
        if value < 1:
            raise SystemExit(f"--{name}: {value} must be >= 1")
        values.append(value)
    return values


def heads_arg(text: str) -> tuple[int, int, int]:
    try:
        hq, hkv, d = (int(x) for x in text.split("/"))
    except ValueError:
        raise SystemExit(f"--heads wants Hq/Hkv/D like 32/8/128, got '{text}'") from None
    return hq, hkv, d


def sweep_parser(prog: str, doc: str, heads: tuple[int, int, int]) -> argparse.ArgumentParser:
    """A parser with the module docstring as help and --heads."""
    ap = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--heads", type=heads_arg, default=heads, help="Hq/Hkv/D (default %s)" % "/".join(map(str, heads)))
    return ap


def parse_with_knobs(ap: argparse.ArgumentParser, argv: list[str], knobs: dict[str, str]) -> argparse.Namespace:
    """Add each knob ({option: help}) as a comma-separated list defaulting to 'auto',
    plus --json; parse; return the knobs as lists (None = the heuristic's choice)."""
    for option, help_text in knobs.items():
        ap.add_argument(f"--{option}", default="auto", help=f"{help_text}, comma-separated; 'auto' = heuristic")
    ap.add_argument("--json", default=None, help="also write every row to this file")
    args = ap.parse_args(argv)
    for option in knobs:
        dest = option.replace("-", "_")
        setattr(args, dest, knob_list(getattr(args, dest), option))
    return args


def cuda_missing(tool: str) -> bool:
    """True (after saying so on stderr) when there is no CUDA device to sweep on."""
    if torch.cuda.is_available():
        return False
    print(f"{tool}: needs a CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
    return True
