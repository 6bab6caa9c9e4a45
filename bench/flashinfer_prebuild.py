"""Build FlashInfer's JIT modules for the kernel benchmarks before they run.

FlashInfer compiles each (setting, dtype, head dim) module on first use: ~14 s for
a CUDA-core decode, ~35 s for fa2, ~100 s for fa3 on the H200 machine. Timed inside
a benchmark that would eat its time budget, so `ci/gpu_suite.sh` runs this first,
in the background, one process per module (they build in parallel), and the
benchmarks find the modules built.

    python -m bench.flashinfer_prebuild [--export modules.tar.gz] [--import modules.tar.gz]

`--export` packs the built libraries so a later run can `--import` them into
FlashInfer's AOT folder (they then load without compiling).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tarfile
import time
from pathlib import Path

# (kind, setting, cache dtype, Hq, Hkv, D): what bench_kernels_decode/prefill ask for.
MODULES = [
    ("decode", "cuda_core", "bf16", 32, 8, 128), ("decode", "cuda_core", "bf16", 9, 3, 64),
    ("decode", "cuda_core", "fp8", 32, 8, 128),
    ("decode", "fa2", "bf16", 32, 8, 128), ("decode", "fa2", "bf16", 9, 3, 64), ("decode", "fa2", "fp8", 32, 8, 128),
    ("decode", "fa3", "bf16", 32, 8, 128),
    ("prefill", "fa3", "bf16", 32, 8, 128), ("prefill", "fa2", "bf16", 32, 8, 128),
]


def build_jobs(spec: tuple, cores: int) -> int:
    """Compile jobs (ninja -j, FlashInfer's MAX_JOBS) for one module's build, all nine
    building at once: an fa3 module is several large sm90 sources, the rest one or two
    (30 jobs on 16 cores at first; the small builds are done within ~100 s). With one
    job each (cores // 9 on the 16-core H200 machine) the two fa3 modules were still
    building at 162 s, when the others had finished by 96 s."""
    return max(2, cores // 2) if spec[1] == "fa3" else 2


def _build_one(job: tuple[tuple, int]) -> tuple[tuple, float, str | None]:
    """Run one tiny problem of `spec` through FlashInfer (which builds its module with
    `jobs` compile jobs)."""
    spec, jobs = job
    os.environ["MAX_JOBS"] = str(jobs)                   # this worker process's own build
    import torch

    from bench.dtypes import CACHE_DTYPES
    from bench.peer_flashinfer import decode_fn, prefill_fn, workspace
    from bench.problems import decode_problem, prefill_problem
    kind, setting, dtype, hq, hkv, d = spec
    t = time.perf_counter()
    try:
        ws = workspace("cuda")
        if kind == "decode":
            p = decode_problem(2, 64, hq, hkv, d, CACHE_DTYPES[dtype], device="cuda")
            decode_fn(ws, p.query, p.kv_cache, p.block_tables, p.context_lens, p.scale, setting)()
        else:
            p = prefill_problem(2, 64, hq, hkv, d, device="cuda")
            prefill_fn(ws, p.query, p.kv_cache, p.block_tables, p.query_start_loc, p.context_lens, p.scale,
                       setting)()
        torch.cuda.synchronize()
        return spec, time.perf_counter() - t, None
    except Exception as exc:   # reported per module; the benchmark records the same failure
        return spec, time.perf_counter() - t, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"


def export_modules(tarball: Path) -> int:
    """Pack every built FlashInfer library as <name>/<name>.so; returns how many."""
    from flashinfer.jit import env
    libs = sorted(p for p in env.FLASHINFER_JIT_DIR.glob("*/*.so") if p.stem == p.parent.name)
    with tarfile.open(tarball, "w:gz") as tar:
        for lib in libs:
            tar.add(lib, arcname=f"{lib.parent.name}/{lib.name}")
    return len(libs)


def import_modules(tarball: Path) -> int:
    """Unpack libraries packed by export_modules into FlashInfer's AOT folder."""
    from flashinfer.jit import env
    env.FLASHINFER_AOT_DIR.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".so") and ".." not in m.name]
        tar.extractall(env.FLASHINFER_AOT_DIR, members=members, filter="data")
    return len(members)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--import", dest="import_", type=Path, metavar="TARBALL",
                        help="first unpack modules a previous run exported")
    parser.add_argument("--export", type=Path, metavar="TARBALL", help="afterwards pack the built modules")
    args = parser.parse_args(argv)
    from bench.peer_flashinfer import unavailable_reason
    reason = unavailable_reason()
    if reason:
        print(f"flashinfer_prebuild: {reason}; nothing built", file=sys.stderr)
        return 2
    if args.import_:
        print(f"imported {import_modules(args.import_)} prebuilt modules from {args.import_}", flush=True)
    # Every module builds at once, each with its share of the cores (a MAX_JOBS of the user's stands).
    user_jobs = os.environ.get("MAX_JOBS")
    jobs = [(spec, int(user_jobs) if user_jobs else build_jobs(spec, os.cpu_count() or 8)) for spec in MODULES]
    t = time.perf_counter()
    failed = 0
    with mp.get_context("spawn").Pool(len(MODULES)) as pool:
        for spec, seconds, error in pool.imap_unordered(_build_one, jobs):
            failed += error is not None
            print(f"{'FAIL' if error else 'ok  '} {'/'.join(map(str, spec))}: {seconds:.0f} s"
                  + (f" ({error})" if error else ""), flush=True)
    print(f"flashinfer modules ready in {time.perf_counter() - t:.0f} s, {failed} failed", flush=True)
    if args.export:
        print(f"exported {export_modules(args.export)} modules to {args.export}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
