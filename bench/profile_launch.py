"""Where the host time of one paged_decode call goes, piece by piece (a profiling tool).

    python3 -m bench.profile_launch [--batch 64] [--context 4096] [--calls 200] [--cprofile 20] [--cpu]

Each line is host microseconds per call (median of 7 rounds of --calls calls,
no sync inside a round), measured in this run on this machine:
- a bare launch of an empty kernel through the JIT, and through its compiled handle;
- the decode kernels' own launch through the compiled handle (`handle[grid](*args)`)
  and through Triton's launcher object directly, with the arguments an unchecked
  call passes (recorded from one call);
- the unchecked call (out=, workspace=: its repeats run the workspace's plan),
  and the same call with its launches stubbed (the Python alone);
- pieces: the current stream, the argument checks.
Then cProfile of the unchecked call, top functions by own time. Needs a CUDA
device; `--cpu` times only the unchecked call's Python, on CPU tensors with the
launcher stubbed (bench/cpu_launch_stubs.py; TRITON_INTERPRET unset).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
from typing import Callable

import torch
import triton


@triton.jit
def _empty_kernel():
    pass


def per_call_us(fn: Callable[[], object], calls: int) -> float:
    """Median host microseconds per call (bench_launch's measure)."""
    from bench.bench_launch import host_seconds
    return statistics.median(host_seconds(fn, calls=calls)) * 1e6


def _unchecked_call(batch: int, context: int, device: str, cache_dtype: torch.dtype = torch.bfloat16):
    """The decode problem and its unchecked call (out=, workspace=), as bench_launch makes it."""
    import kernels
    from bench.problems import decode_problem
    p = decode_problem(batch, context, 32, 8, 128, cache_dtype=cache_dtype, device=device, seed=1)
    out = torch.empty_like(p.query)
    workspace = kernels.DecodeWorkspace()

    def unchecked() -> None:
        kernels.paged_decode(p.query, p.kv_cache, p.block_tables, p.context_lens, p.scale, p.kv_scales, out=out,
                             check_indices=False, max_context_len=p.context, workspace=workspace)
    return p, out, unchecked


_CACHES = {"bf16": torch.bfloat16, "fp8": torch.float8_e4m3fn, "int8": torch.int8}


def _print_cprofile(fn: Callable[[], object], calls: int, rows: int) -> None:
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        fn()
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(rows)
    print(text.getvalue())


def _cpu(args: argparse.Namespace) -> int:
    """The unchecked call's Python on this CPU, launcher stubbed."""
    from bench.cpu_launch_stubs import launcher_stubbed, per_call_us as cpu_per_call_us
    from kernels.triton_compat import is_interpreting
    if is_interpreting():
        print("profile_launch --cpu: unset TRITON_INTERPRET (the kernels must be JIT functions)", file=sys.stderr)
        return 2
    _, _, unchecked = _unchecked_call(args.batch, args.context, "cpu")
    with launcher_stubbed():
        us = cpu_per_call_us(unchecked, args.calls)
        print(f"profile_launch --cpu: B={args.batch} L={args.context} 32/8/128 bf16, torch {torch.__version__}: "
              f"{us:8.2f} us  paged_decode unchecked (out=, workspace=), launcher stubbed (Python only)")
        if args.cprofile:
            _print_cprofile(unchecked, args.calls, args.cprofile)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m bench.profile_launch", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64, help="sequences (default 64)")
    ap.add_argument("--context", type=int, default=4096, help="tokens per sequence (default 4096)")
    ap.add_argument("--calls", type=int, default=200,
                    help="calls per round (default 200, bench_launch's: a round's launches must stay below CUDA's "
                         "~1024-launch queue, or the host waits on the device and times the GPU)")
    ap.add_argument("--cprofile", type=int, default=20, help="cProfile rows to print (0: none; default 20)")
    ap.add_argument("--cpu", action="store_true", help="no GPU: the call's Python alone, launcher stubbed")
    ap.add_argument("--cache", choices=sorted(_CACHES), default="bf16",
                    help="cache dtype (default bf16; fp8/int8 take the quantised route on sm_89+)")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if args.cpu:
        return _cpu(args)
    if not torch.cuda.is_available():
        print("profile_launch: needs a CUDA device (or --cpu)", file=sys.stderr)
        return 2
    from kernels import decode_plan
    from kernels import launch as launch_mod
    from kernels.validation import check_attention, check_index_tensors
    p, out, unchecked = _unchecked_call(args.batch, args.context, "cuda", _CACHES[args.cache])

    recorded: list[tuple] = []                  # (Prepared, ptrs) of each launch of one call
    real_run = decode_plan.run_prepared
    decode_plan.run_prepared = lambda prep, ptrs: recorded.append((prep, ptrs))
    try:
        unchecked()
    finally:
        decode_plan.run_prepared = real_run
    prepared, ptrs = recorded[0]
    kernel, grid, scalars, consts, options = (prepared.kernel, prepared.grid, prepared.scalars, prepared.consts,
                                              prepared.options)
    kern = prepared.kern
    handle = kern.handle
    empty = _empty_kernel.warmup(grid=(1,))
    empty = empty.result() if hasattr(empty, "result") else empty
    stream = torch.cuda.current_stream().cuda_stream

    def raw_launch() -> None:
        kern.run(grid[0], grid[1], grid[2], stream, kern.function, kern.packed_metadata, None, None, None,
                 *ptrs, *scalars, *consts)

    rows = {
        "bare launch, JIT": lambda: _empty_kernel[(1,)](),
        "bare launch, compiled handle": lambda: empty[(1, 1, 1)](),
        f"decode split kernel, compiled handle ({len(ptrs)} tensors, {len(scalars)} scalars)":
            lambda: handle[grid](*ptrs, *scalars, *consts),
        "decode split kernel, launcher object direct (stream given)": raw_launch,
        "decode split kernel, kernels.launch.launch": lambda: launch_mod.launch(kernel, grid, ptrs, scalars, consts,
                                                                                options),
        "decode split kernel, kernels.launch.run_prepared (a plan's launch)": lambda: real_run(prepared, ptrs),
        "specialisation key (arg_classes)": lambda: launch_mod.arg_classes(kernel, ptrs, scalars),
        "current stream (torch)": lambda: torch.cuda.current_stream().cuda_stream,
        "check_attention": lambda: check_attention("paged_decode", p.query, p.kv_cache, p.kv_scales, out, False),
        "check_index_tensors": lambda: check_index_tensors(p.block_tables, p.context_lens, args.batch,
                                                           p.query.device),
        f"paged_decode unchecked ({len(recorded)} launch(es))": unchecked,
    }
    print(f"profile_launch: {torch.cuda.get_device_name()}, B={args.batch} L={args.context} 32/8/128, "
          f"{args.cache} cache, "
          f"triton {triton.__version__}, torch {torch.__version__}")
    for name, fn in rows.items():
        print(f"  {per_call_us(fn, args.calls):8.2f} us  {name}")
    decode_plan.run_prepared = lambda prep, ptrs: None
    try:
        print(f"  {per_call_us(unchecked, args.calls):8.2f} us  paged_decode unchecked, run_prepared stubbed "
              "(Python only)")
    finally:
        decode_plan.run_prepared = real_run
    if args.cprofile:
        _print_cprofile(unchecked, args.calls, args.cprofile)
        torch.cuda.synchronize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
