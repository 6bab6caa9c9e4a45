"""Sweep paged_prefill's tile shapes on one causal prefill and print what each costs.

    python3 -m bench.sweep_prefill --batch 4 --seq-len 4096 --heads 32/32/128 \
        --block-m 64,128 --block-n 64,128 --warps 4,8 --stages 2,3 --json out.json
    python3 -m bench.sweep_prefill --seq-len 512 --cached 3584 --heads 32/8/128   # an extend

Every configuration is first checked against SDPA's flash backend on the same
unpaged tensors (relative error < 2e-2), then timed like the benchmarks (a
precomputed plan, CUDA graph, L2 flushed before each run). The table gives
time, TFLOP/s (causal FLOPs), the ratio to SDPA flash timed in the same run and
to the heuristic's own choice (`auto` everywhere, kernels/prefill_config.py).
Needs a CUDA device.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time

import torch

from bench.sweep_args import cuda_missing, parse_with_knobs, sweep_parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = sweep_parser("python3 -m bench.sweep_prefill", __doc__, (32, 32, 128))
    ap.add_argument("--batch", type=int, default=4, help="sequences (default 4)")
    ap.add_argument("--seq-len", type=int, default=4096, help="new tokens (queries) per sequence (default 4096)")
    ap.add_argument("--cached", type=int, default=0,
                    help="tokens already in the cache before the new ones (an extend; default 0)")
    ap.add_argument("--page", type=int, default=16,
                    help="cache block size in tokens (default 16; a page >= block_n makes each KV tile one "
                         "contiguous run, which prices the block-table gather)")
    args = parse_with_knobs(ap, argv, {"block-m": "query rows per program (powers of two >= 16)",
                                       "block-n": "KV tokens per inner step (powers of two >= 16)",
                                       "warps": "num_warps values", "stages": "num_stages values"})
    if args.batch < 1 or args.seq_len < 1 or args.cached < 0:
        ap.error("--batch and --seq-len must be >= 1, --cached >= 0")
    if args.page < 1 or args.page & (args.page - 1):
        ap.error(f"--page must be a power of two, got {args.page}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if cuda_missing("sweep_prefill"):
        return 2
    import kernels
    from bench.figures import check_close
    from bench.peers import sdpa_extend, sdpa_flash_prefill
    from bench.problems import extend_problem
    from bench.timing import L2Flush, time_gpu
    from kernels.prefill_plan import plan_prefill

    flush = L2Flush("cuda")
    hq, hkv, d = args.heads
    p = extend_problem(args.batch, args.seq_len, args.cached, hq, hkv, d, block_size=args.page, device="cuda")
    k, v = p.k, p.v
    # An extend's queries are the last ones: causal aligned to the end, which SDPA's
    # is_causal (aligned to the start) is not; SDPA picks its kernel for that bias.
    peer = sdpa_extend if args.cached else sdpa_flash_prefill
    peer_name = "SDPA (lower-right causal)" if args.cached else "SDPA flash"
    try:
        ref = peer(p.q, k, v, p.scale)
    except RuntimeError:   # no GQA there: hand it the repeated heads, as the benchmark does
        k, v = (t.repeat_interleave(hq // hkv, dim=1) for t in (p.k, p.v))
        ref = peer(p.q, k, v, p.scale)
    ref = ref.transpose(1, 2).reshape(p.query.shape)
    sdpa = time_gpu(lambda: peer(p.q, k, v, p.scale), flush)
    num_blocks, _, block_size, _, head_dim = p.kv_cache.shape
    out = torch.empty_like(p.query)
    combos = list(itertools.product(args.block_m, args.block_n, args.warps, args.stages))
    if (None, None, None, None) not in combos:
        combos.insert(0, (None, None, None, None))      # the heuristic's choice: the baseline
    flops = p.causal_flops()
    what = f"extend {args.seq_len} over {args.cached} cached" if args.cached else f"prefill L={args.seq_len}"
    print(f"{what} B={args.batch} {hq}/{hkv}/{d} page {args.page} causal: {peer_name} {sdpa.median * 1e3:.3f} ms "
          f"({flops / sdpa.median / 1e12:.0f} TFLOP/s); {len(combos)} configurations")
    rows = []
    for i, (block_m, block_n, warps, stages) in enumerate(combos, 1):
        kw = dict(block_m=block_m, block_n=block_n, num_warps=warps, num_stages=stages)
        t0 = time.perf_counter()
        try:
            plan = plan_prefill(p.query_start_loc, p.context_lens, p.block_tables, p.query.shape[0], num_blocks,
                                block_size, head_dim, p.query.dtype, True, **kw)
            cfg = plan.config
            label = f"block_m={cfg.block_m} block_n={cfg.block_n} warps={cfg.num_warps} stages={cfg.num_stages}"
            err = check_close(label, kernels.paged_prefill(p.query, p.kv_cache, p.block_tables, p.query_start_loc,
                                                           p.context_lens, p.scale, plan=plan), ref)
            samples = time_gpu(lambda: kernels.paged_prefill(p.query, p.kv_cache, p.block_tables, p.query_start_loc,
                                                             p.context_lens, p.scale, out=out, plan=plan), flush)
        except Exception as e:  # a config the compiler rejects (shared memory, registers): report, go on
            label = " ".join(f"{k}={v}" for k, v in kw.items())
            print(f"[{i}/{len(combos)}] {label}: FAILED {type(e).__name__}: {str(e).splitlines()[0][:160]}")
            rows.append({"config": label, "auto": all(v is None for v in kw.values()),
                         "error": f"{type(e).__name__}: {e}"[:400]})
            continue
        tflops = flops / samples.median / 1e12
        rows.append({"config": label, "auto": all(v is None for v in kw.values()), "block_m": cfg.block_m,
                     "block_n": cfg.block_n, "num_warps": cfg.num_warps, "num_stages": cfg.num_stages,
                     "median_s": samples.median, "iqr_s": samples.iqr, "tflops": tflops,
                     "speedup_vs_sdpa": sdpa.median / samples.median, "rel_error": err, "timing": samples.mode})
        print(f"[{i}/{len(combos)}] {label}: {samples.median * 1e3:.3f} ms, {tflops:.0f} TFLOP/s "
              f"({time.perf_counter() - t0:.1f} s incl. compile)", flush=True)
    base = next((r for r in rows if r["auto"] and "median_s" in r), None)
    print(f"\n| config | ms | TFLOP/s | vs {peer_name} | vs auto |\n|---|---|---|---|---|")
    for r in sorted((r for r in rows if "median_s" in r), key=lambda r: r["median_s"]):
        vs = base["median_s"] / r["median_s"] if base else float("nan")
        print(f"| {r['config']}{' (auto)' if r['auto'] else ''} | {r['median_s'] * 1e3:.3f} | {r['tflops']:.0f} | "
              f"{r['speedup_vs_sdpa']:.3f}× | {vs:.3f}× |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"problem": {"batch": args.batch, "seq_len": args.seq_len, "cached": args.cached,
                                   "page": args.page, "heads": [hq, hkv, d],
                                   "flops": flops},
                       "sdpa_median_s": sdpa.median, "device": torch.cuda.get_device_name(),
                       "torch": torch.__version__, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
