"""The plots a suite's records get in a report, by the names suites.py gives them.

`bench compare --plots` (the head side) and `bench history --plot` (each device's
newest commit) both call suite_figures: every suite of the registry draws its
figures from the records it owns, so a new suite brings its plots with it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.harness import plots, plots_engine
from bench.harness.suites import SUITES


@dataclass(frozen=True)
class Figure:
    accepts: Callable[[dict], bool]                     # one record's extra_info
    draw: Callable[[list[dict], Path, str, dict], Path]  # records, PNG path, title, machine_info


def _roofline(records: list[dict], path: Path, title: str, machine_info: dict) -> Path:
    spec = machine_info.get("gpu_spec") or {}
    return plots.roofline(records, path, title, theoretical_gbps=spec.get("theoretical_bandwidth_gbps"))


def _engine(records: list[dict], path: Path, title: str, machine_info: dict) -> Path:
    return plots_engine.engine_throughput(records, path, title)


FIGURES: dict[str, Figure] = {
    "roofline": Figure(lambda info: plots.kernel_point(info) is not None, _roofline),
    "throughput_vs_peer": Figure(plots_engine.is_engine_record, _engine),
}


def machine_name(machine_info: dict) -> str:
    gpu = machine_info.get("gpu")
    if isinstance(gpu, dict) and gpu.get("name"):
        return str(gpu["name"])
    cpu, cores = machine_info.get("cpu_model"), machine_info.get("cpu_cores")
    return f"{cpu or 'CPU'}" + (f", {cores} cores" if cores else "")


def suite_figures(records: list[dict], folder: Path, machine_info: dict, label: str = "",
                  prefix: str = "") -> list[Path]:
    """The PNGs of every suite's figures over `records` ({'fullname', 'extra_info'} each),
    written as folder/<prefix><suite>_<figure>.png; a figure with no record it accepts is
    not drawn."""
    paths = []
    for suite in SUITES:
        mine = [r for r in records if suite.owns(r.get("fullname") or "")]
        for key in suite.figures:
            figure = FIGURES[key]
            chosen = [r for r in mine if figure.accepts(r.get("extra_info") or {})]
            if chosen:
                title = f"{label}{suite.name} on {machine_name(machine_info)}"
                paths.append(figure.draw(chosen, folder / f"{prefix}{suite.name}_{key}.png", title, machine_info))
    return paths
