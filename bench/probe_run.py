"""What the kernel probes (bench/probe_*.py) do once their device is known to fit:
correctness first, timings only when every check passed, one JSON record."""
from __future__ import annotations

import json
import sys
from typing import Callable

def checks_then_timings(device: str, checks: Callable[[], list[dict]], timings: Callable[[], list[dict]],
                        no_time: bool, json_path: str | None) -> int:
    """Run `checks` (rows with "case" and "ok"); when all pass and `no_time` is off,
    `timings`; write both to `json_path` when given. Exit status 1 if a check failed."""
    result = {"device": device, "checks": checks()}
    failed = [r["case"] for r in result["checks"] if not r["ok"]]
    if not failed and not no_time:
        result["timings"] = timings()
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=1)
    if failed:
        print(f"{len(failed)} case(s) failed: {failed}", file=sys.stderr)
    return 1 if failed else 0
