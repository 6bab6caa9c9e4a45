"""Where the host time of one paged_prefill call goes, piece by piece (a profiling tool).

    python3 -m bench.profile_launch_prefill [--batch 4] [--seq-len 1024] [--kernel auto] [--calls 200]
                                            [--cprofile 20]

Each line is host microseconds per call (median of 7 rounds of --calls calls, no
sync inside a round; bench_launch's measure), on this machine, 32/8/128 bf16,
block 16:
- a bare launch of an empty kernel through the JIT (bench_launch's yardstick);
- the unchecked call (plan=, out=: its repeats replay the plan's launch) and, for
  the sm_90 kernel, its pieces: the call key, the two TMA descriptors, the
  compiled launch with descriptors built once;
- the checked call (no plan: checks with one sync, the tile map, the launch) and
  its pieces: the plan (checks + tile-map launch) and the launch object;
then cProfile of both calls, top functions by own time. Needs a CUDA device.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

import torch
import triton


@triton.jit
def _empty_kernel():
    pass


def _rows(args: argparse.Namespace) -> tuple[dict[str, Callable[[], object]], Callable[[], object],
                                              Callable[[], object]]:
    import kernels
    import kernels.launch as launch
    from bench.problems import prefill_problem
    from kernels.call_key import call_key
    from kernels.prefill_plan import plan_checked, plan_prefill
    p = prefill_problem(args.batch, args.seq_len, 32, 8, 128, device="cuda", seed=1)
    out = torch.empty_like(p.query)
    num_blocks, _, block_size, _, head_dim = p.kv_cache.shape
    tokens, seqs = p.query.shape[0], p.context_lens.shape[0]
    plan = plan_prefill(p.query_start_loc, p.context_lens, p.block_tables, tokens, num_blocks, block_size,
                        head_dim, p.query.dtype, True, kernel=args.kernel)
    fixed = (p.kv_cache, p.block_tables, p.query_start_loc, p.context_lens, p.scale)

    def unchecked() -> None:
        kernels.paged_prefill(p.query, *fixed, out=out, plan=plan)

    def checked() -> None:
        kernels.paged_prefill(p.query, *fixed, out=out, kernel=args.kernel)

    unchecked()
    torch.cuda.synchronize()
    rows: dict[str, Callable[[], object]] = {
        "bare launch, JIT": lambda: _empty_kernel[(1,)](),
        "call key": lambda: call_key((p.query, p.kv_cache, p.block_tables, p.query_start_loc, p.context_lens, None,
                                      out), (p.scale, False)),
    }
    (replay,) = plan.launches.values()
    if type(replay) is not launch.Prepared:
        from kernels.prefill_sm90_launch import Sm90Launch, TensorDescriptor
        q_desc = TensorDescriptor(p.query, [tokens, replay.q_cols], [p.query.stride(0), 1], list(replay.q_block),
                                  replay.q_layout)
        kv_desc = TensorDescriptor(p.kv_cache, [replay.kv_rows, replay.kv_cols], [p.kv_cache.stride(2), 1],
                                   list(replay.kv_block), replay.kv_layout)
        ptrs = (q_desc, kv_desc, out, p.block_tables, p.query_start_loc, p.context_lens, plan.tile_map)
        rows.update({
            "two TMA descriptors (Python objects)": lambda: (
                TensorDescriptor(p.query, [tokens, replay.q_cols], [p.query.stride(0), 1], list(replay.q_block),
                                 replay.q_layout),
                TensorDescriptor(p.kv_cache, [replay.kv_rows, replay.kv_cols], [p.kv_cache.stride(2), 1],
                                 list(replay.kv_block), replay.kv_layout)),
            "sm_90 compiled launch, descriptors built once (launcher: TMA encode + launch)": lambda: launch.run_compiled(
                replay.kern, replay.grid, replay.device, ptrs, replay.scalars, replay.consts),
            "Sm90Launch(...) (the checked call's launch object)": lambda: Sm90Launch(
                p.query, p.kv_cache, p.block_tables, out, p.scale, plan.tile_map.shape[1]),
        })
    rows.update({
        "paged_prefill unchecked (plan=, out=)": unchecked,
        "plan (checks with one sync + tile-map launch)": lambda: plan_checked(
            p.query_start_loc, p.context_lens, p.block_tables, seqs, tokens, num_blocks, block_size, head_dim,
            p.query.dtype, True, kernel=args.kernel),
        "paged_prefill checked (no plan)": checked,
    })
    return rows, unchecked, checked


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m bench.profile_launch_prefill", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4, help="sequences (default 4)")
    ap.add_argument("--seq-len", type=int, default=1024, help="prompt tokens per sequence (default 1024)")
    ap.add_argument("--kernel", choices=("auto", "triton", "sm90"), default="auto",
                    help="paged_prefill's kernel option (default auto: the sm_90 kernel on Hopper)")
    ap.add_argument("--calls", type=int, default=200,
                    help="calls per round (default 200, bench_launch's: below CUDA's ~1024-launch queue)")
    ap.add_argument("--cprofile", type=int, default=20, help="cProfile rows to print (0: none; default 20)")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if not torch.cuda.is_available():
        print("profile_launch_prefill: needs a CUDA device", file=sys.stderr)
        return 2
    from bench.profile_launch import _print_cprofile, per_call_us
    rows, unchecked, checked = _rows(args)
    print(f"profile_launch_prefill: {torch.cuda.get_device_name()}, B={args.batch} L={args.seq_len} 32/8/128 bf16, "
          f"kernel={args.kernel}, triton {triton.__version__}, torch {torch.__version__}")
    for name, fn in rows.items():
        synced = "one sync" in name or name.endswith("(no plan)")         # a sync a call: fewer calls
        calls = args.calls // 10 if synced else args.calls
        print(f"  {per_call_us(fn, max(calls, 10)):8.2f} us  {name}")
    if args.cprofile:
        for name, fn, calls in (("unchecked", unchecked, args.calls), ("checked", checked, max(args.calls // 10, 10))):
            print(f"cProfile, paged_prefill {name}, {calls} calls:")
            _print_cprofile(fn, calls, args.cprofile)
            torch.cuda.synchronize()
    return 0


if __name__ == "__main__":
    sys.exit(main())
