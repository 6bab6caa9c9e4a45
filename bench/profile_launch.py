"""Where the host time of one paged_decode call goes, piece by piece (a profiling tool).

    python3 -m bench.profile_launch [--batch 64] [--context 4096] [--calls 2000] [--cprofile 20]

Each line is host microseconds per call (median of 7 rounds of --calls calls,
no sync inside a round), measured in this run on this machine:
- a bare launch of an empty kernel through the JIT, and through its compiled handle;
- the decode kernels' own launch through the compiled handle (`handle[grid](*args)`)
  and through Triton's launcher object directly, with the arguments an unchecked
  call passes (recorded from one call);
- the unchecked call, and the same call with its launches stubbed (the Python alone);
- pieces: the current stream, the argument checks.
Then cProfile of the unchecked call, top functions by own time. Needs a CUDA device.
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m bench.profile_launch", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64, help="sequences (default 64)")
    ap.add_argument("--context", type=int, default=4096, help="tokens per sequence (default 4096)")
    ap.add_argument("--calls", type=int, default=2000, help="calls per round (default 2000)")
    ap.add_argument("--cprofile", type=int, default=20, help="cProfile rows to print (0: none; default 20)")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if not torch.cuda.is_available():
        print("profile_launch: needs a CUDA device", file=sys.stderr)
        return 2
    import kernels
    from bench.problems import decode_problem
    from kernels import launch as launch_mod
    from kernels.validation import check_attention, check_index_tensors
    paged_decode_mod = sys.modules["kernels.paged_decode"]

    p = decode_problem(args.batch, args.context, 32, 8, 128, device="cuda", seed=1)
    out = torch.empty_like(p.query)
    workspace = kernels.DecodeWorkspace()

    def unchecked() -> None:
        kernels.paged_decode(p.query, p.kv_cache, p.block_tables, p.context_lens, p.scale, out=out,
                             check_indices=False, max_context_len=p.context, workspace=workspace)

    recorded: list[tuple] = []
    real_launch = paged_decode_mod.launch
    paged_decode_mod.launch = lambda *a, **k: recorded.append(a)
    unchecked()
    paged_decode_mod.launch = real_launch
    kernel, grid, ptrs, scalars, consts, options = recorded[0] + ((),) * (6 - len(recorded[0]))
    key = launch_mod.arg_classes(kernel, ptrs, scalars)
    kern = launch_mod.compiled(kernel, torch.cuda.current_device(), key, consts, options)
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
        "decode split kernel, kernels.launch.launch": lambda: real_launch(kernel, grid, ptrs, scalars, consts,
                                                                          options),
        "specialisation key (arg_classes)": lambda: launch_mod.arg_classes(kernel, ptrs, scalars),
        "current stream (torch)": lambda: torch.cuda.current_stream().cuda_stream,
        "check_attention": lambda: check_attention("paged_decode", p.query, p.kv_cache, None, out, False),
        "check_index_tensors": lambda: check_index_tensors(p.block_tables, p.context_lens, args.batch,
                                                           p.query.device),
        f"paged_decode unchecked ({len(recorded)} launch(es))": unchecked,
    }
    print(f"profile_launch: {torch.cuda.get_device_name()}, B={args.batch} L={args.context} 32/8/128 bf16, "
          f"triton {triton.__version__}, torch {torch.__version__}")
    for name, fn in rows.items():
        print(f"  {per_call_us(fn, args.calls):8.2f} us  {name}")
    paged_decode_mod.launch = lambda *a, **k: None
    try:
        print(f"  {per_call_us(unchecked, args.calls):8.2f} us  paged_decode unchecked, launches stubbed (Python only)")
    finally:
        paged_decode_mod.launch = real_launch
    if args.cprofile:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.calls):
            unchecked()
        prof.disable()
        torch.cuda.synchronize()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(args.cprofile)
        print(text.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
