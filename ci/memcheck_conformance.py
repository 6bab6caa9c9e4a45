"""The GPU conformance subset under compute-sanitizer memcheck (`make gpu-memcheck`).

    python3 ci/memcheck_conformance.py [OUT_DIR] [--parallel 3] [--tests-per-process 4]
                                       [--cap-s 560] [--cache-cap-gib 1] [--caching] [-- PYTEST_ARGS]

Every test of `pytest -m "gpu or kernel"` (the `memcheck` Hypothesis profile: 9
examples where a test does not set its own count) runs under
memcheck, a few tests per process, several processes at a time, so no process
lives long enough to gather much memory: with one long-lived pytest process per
worker, memcheck runs lost the H100's memory during the prefill tests
(2026-11-28: 17 of 161 tests failed on cudaMalloc with 2, 4 or 8 workers alike;
no access error among the errors printed; cause not yet known, hence the log).
PYTORCH_NO_CUDA_MEMORY_CACHING=1 gives every tensor its own allocation, so an
overrun past a tensor's end is an access error memcheck can see; `--caching`
keeps torch's caching allocator instead (fewer cudaMalloc calls, but an overrun
into a neighbour in the same cached segment goes unseen: the report says so).
The random-shape prefill caches are capped at --cache-cap-gib (PAGEDLM_TEST_CACHE_CAP_GIB);
the dedicated 32-bit-overflow tests keep their full size.

Writes into OUT_DIR:
  memcheck_conformance.txt  verdict, one line per chunk, error kinds, then each chunk's
                            report (host backtrace frames dropped)
  memcheck_conformance.xml  the chunks' JUnit records as one document
  memcheck_memory.txt       free GPU memory and torch's own allocation after every test
Exit 0 only when every chunk ran to the end, memcheck found 0 errors and every test passed.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MARKERS = "gpu or kernel"
# "ERROR SUMMARY: N errors" closes each process; "... N errors were not printed" is no count of its own.
_SUMMARY = re.compile(r"ERROR SUMMARY: (\d+) errors?$", re.M)
# Not anchored at the line start: pytest's progress dots share the line with the first error.
_ERROR_HEAD = re.compile(r"========= (Invalid .*|Program hit .*|Race .*|Uninitialized .*|Leaked .*|"
                         r"Out-of-range .*|Misaligned .*|Barrier .*|Malloc/Free .*)$", re.M)


@dataclass
class ChunkResult:
    index: int
    node_ids: list[str]
    seconds: float
    exit_code: int | None        # None: stopped at the run's cap
    report: str
    junit: Path | None

    @property
    def sanitizer_errors(self) -> int | None:
        """Errors memcheck counted, or None when it printed no summary (killed, crashed)."""
        counts = [int(n) for n in _SUMMARY.findall(self.report)]
        return sum(counts) if counts else None


def error_kinds(report: str) -> Counter:
    """Printed errors by kind, addresses and sizes folded: device accesses
    ("Invalid __global__ read") apart from failed API calls ("Program hit ...")."""
    kinds = Counter()
    for head in _ERROR_HEAD.findall(report):
        head = re.sub(r"0x[0-9a-f]+", "ADDR", head)
        head = re.sub(r" of size \d+ bytes?", "", head)
        kinds[re.sub(r" on CUDA API call to .*", "", head)] += 1
    return kinds


def chunk_node_ids(node_ids: list[str], per_process: int) -> list[list[str]]:
    """Tests of one file stay together (they share compiled kernels), at most
    `per_process` to a chunk; files keep their collection order."""
    by_file: dict[str, list[str]] = {}
    for nid in node_ids:
        by_file.setdefault(nid.split("::", 1)[0], []).append(nid)
    return [ids[i:i + per_process] for ids in by_file.values() for i in range(0, len(ids), per_process)]


def merge_junit(paths: list[Path | None]) -> ET.Element:
    """One <testsuites> holding every chunk's test cases; totals summed."""
    root = ET.Element("testsuites")
    suite = ET.SubElement(root, "testsuite", name="memcheck-conformance")
    totals = Counter()
    for path in paths:
        if path is None or not path.exists():
            continue
        for case in ET.parse(path).getroot().iter("testcase"):
            suite.append(case)
            totals["tests"] += 1
            for kind in ("failure", "error", "skipped"):
                if case.find(kind) is not None:
                    totals[{"failure": "failures", "error": "errors", "skipped": "skipped"}[kind]] += 1
    for key in ("tests", "failures", "errors", "skipped"):
        suite.set(key, str(totals[key]))
    return root


def strip_backtraces(report: str) -> str:
    return "\n".join(line for line in report.splitlines() if "Host Frame:" not in line
                     and "Saved host backtrace" not in line)


def verdict(results: list[ChunkResult], junit: ET.Element, planned: int) -> tuple[bool, str]:
    """(clean, one-line verdict) from the chunks and their merged JUnit (`merge_junit`)."""
    tests = junit.find("testsuite")
    n, failed = int(tests.get("tests")), int(tests.get("failures")) + int(tests.get("errors"))
    incomplete = [r for r in results if r.exit_code is None or r.sanitizer_errors is None]
    not_run = planned - len(results)
    total_errors = sum(r.sanitizer_errors or 0 for r in results)
    if total_errors:
        word = f"NOT CLEAN ({total_errors} errors)"
    elif incomplete or not_run:
        word = f"INCOMPLETE ({len(incomplete)} chunks without a memcheck summary, {not_run} not started)"
    else:
        word = f"CLEAN (0 errors in {len(results)} processes)"
    clean = not total_errors and not incomplete and not not_run and failed == 0 and n > 0
    return clean, f"memcheck over the GPU conformance: {word}; pytest: {n - failed} of {n} tests passed"


def collect(python: str, targets: list[str]) -> list[str]:
    out = subprocess.run([python, "-m", "pytest", *targets, "-m", MARKERS, "--collect-only", "-q",
                          "-p", "no:cacheprovider"], cwd=REPO, capture_output=True, text=True)
    ids = [line.strip() for line in out.stdout.splitlines() if "::" in line and not line.startswith(" ")]
    if out.returncode not in (0, 5) or not ids:
        raise SystemExit(f"memcheck_conformance: collecting {targets} -m '{MARKERS}' found no tests "
                         f"(pytest exit {out.returncode}):\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return ids


def run_chunk(index: int, ids: list[str], args: argparse.Namespace, work: Path, deadline: float,
              env: dict[str, str]) -> ChunkResult | None:
    left = deadline - time.monotonic()
    if left < 30:
        return None                      # not started: reported as such
    junit = work / f"chunk{index:03d}.xml"
    cmd = ["compute-sanitizer", "--tool", "memcheck", "--error-exitcode", "99", "--print-limit", "200",
           args.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *ids]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=left)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGINT)          # pytest still writes what it finished
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        out += "\n[stopped at the run's time cap]\n"
        code = None
    return ChunkResult(index, ids, time.monotonic() - t0, code, out, junit if junit.exists() else None)


def cuda_available(python: str) -> bool:
    probe = subprocess.run([python, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True)
    return probe.stdout.strip() == "True"


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python3 ci/memcheck_conformance.py", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="PYTEST_ARGS (after --) replace the default target `conformance`, "
                                        "e.g. -- conformance/test_kernel_paged_prefill.py -k oracle")
    ap.add_argument("out_dir", nargs="?", default=os.environ.get("OUT", "out"), help="results folder "
                    "(default: $OUT, else ./out)")
    ap.add_argument("--parallel", type=int, default=3, help="sanitizer processes at a time (default 3)")
    ap.add_argument("--tests-per-process", type=int, default=4, help="tests per process (default 4)")
    ap.add_argument("--cap-s", type=float, default=float(os.environ.get("MEMCHECK_CAP_S", 560)),
                    help="seconds for the whole run; chunks not started by then are reported (default 560)")
    ap.add_argument("--cache-cap-gib", type=float, default=1.0, help="largest random prefill cache, GiB (default 1)")
    ap.add_argument("--caching", action="store_true", help="keep torch's caching allocator (weaker check)")
    ap.add_argument("--python", default=os.environ.get("PYTHON", sys.executable), help=argparse.SUPPRESS)
    argv = list(argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if args.parallel < 1 or args.tests_per_process < 1 or args.cap_s <= 0 or args.cache_cap_gib <= 0:
        ap.error("--parallel, --tests-per-process, --cap-s and --cache-cap-gib must be positive")
    args.targets = extra or ["conformance"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if shutil.which("compute-sanitizer") is None:
        print("memcheck_conformance: compute-sanitizer is not on PATH (it comes with the CUDA toolkit)",
              file=sys.stderr)
        return 2
    if not cuda_available(args.python):
        print("memcheck_conformance: no CUDA device here (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    start = time.monotonic()
    out_dir = Path(args.out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    memory_log = out_dir / "memcheck_memory.txt"
    memory_log.write_text("# node id, free GPU memory, torch allocated, torch reserved (MiB), pid\n")
    env = dict(os.environ, HYPOTHESIS_PROFILE="memcheck", PYTHONUNBUFFERED="1", PAGEDLM_GPU_MEMORY_LOG=str(memory_log),
               PAGEDLM_TEST_CACHE_CAP_GIB=str(args.cache_cap_gib))
    if not args.caching:
        env["PYTORCH_NO_CUDA_MEMORY_CACHING"] = "1"
    chunks = chunk_node_ids(collect(args.python, args.targets), args.tests_per_process)
    print(f"memcheck: {sum(map(len, chunks))} tests in {len(chunks)} processes, {args.parallel} at a time, "
          f"cap {args.cap_s:.0f} s", flush=True)
    deadline = start + args.cap_s
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.parallel) as pool:
        futures = [pool.submit(run_chunk, i, ids, args, Path(tmp), deadline, env) for i, ids in enumerate(chunks)]
        results = []
        for fut in futures:
            r = fut.result()
            if r is None:
                continue
            results.append(r)
            print(f"[{time.monotonic() - start:5.0f}s] chunk {r.index + 1}/{len(chunks)} "
                  f"({r.node_ids[0].split('::')[0]}, {len(r.node_ids)} tests): exit {r.exit_code}, "
                  f"memcheck errors {r.sanitizer_errors}, {r.seconds:.0f} s", flush=True)
        suite = merge_junit([r.junit for r in results])
    ET.ElementTree(suite).write(out_dir / "memcheck_conformance.xml", encoding="utf-8", xml_declaration=True)
    clean, line = verdict(results, suite, len(chunks))
    kinds = sum((error_kinds(r.report) for r in results), Counter())
    lines = [line, f"allocator: {'torch caching allocator (overruns inside a cached segment unseen)' if args.caching else 'one cudaMalloc per tensor'}; "
             f"random prefill caches capped at {args.cache_cap_gib:g} GiB; {time.monotonic() - start:.0f} s", ""]
    lines += [f"chunk {r.index + 1}: {len(r.node_ids)} tests from {r.node_ids[0].split('::')[0]}: exit {r.exit_code}, "
              f"memcheck errors {r.sanitizer_errors}, {r.seconds:.0f} s" for r in results]
    lines += [f"chunks not started (time cap): {len(chunks) - len(results)}"] if len(results) < len(chunks) else []
    lines += ["", "printed errors by kind:"] + [f"{n:7d} {k}" for k, n in kinds.most_common()] if kinds else []
    for r in results:
        lines += ["", f"===== chunk {r.index + 1}: " + " ".join(r.node_ids), strip_backtraces(r.report)]
    (out_dir / "memcheck_conformance.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:3 + len(results)]))
    if kinds:
        print("printed errors by kind:\n" + "\n".join(f"{n:7d} {k}" for k, n in kinds.most_common()))
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
