"""Sweep paged_decode's launch knobs on one problem and print what each costs.

    python3 -m bench.sweep_decode --batch 8 --context 4096 --heads 32/8/128 \
        --splits auto,4,8,16 --block-n 32,64,128 --warps 4,8 --stages 2,3 --pdl 0,1 --json out.json

Every configuration is first checked against gather + SDPA (relative error
< 2e-2), then timed like the benchmarks (CUDA graph, L2 flushed before each
run). The table gives time, GB/s, % of the read ceiling measured in the same
run and the ratio to the heuristic's own choice (`auto` everywhere), which is
what kernels/decode_splits.py picks today. Needs a CUDA device.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time

import torch

from bench.dtypes import CACHE_DTYPES
from bench.sweep_args import cuda_missing, parse_with_knobs, sweep_parser
from kernels.paged_decode import SPLIT_REDUCES

DTYPES = CACHE_DTYPES
AUTO = dict(num_splits=None, block_n=None, num_warps=None, num_stages=None, pdl=None, split_reduce=None)


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = sweep_parser("python3 -m bench.sweep_decode", __doc__, (32, 8, 128))
    ap.add_argument("--batch", type=int, default=8, help="sequences (default 8)")
    ap.add_argument("--context", type=int, default=4096, help="tokens per sequence (default 4096)")
    ap.add_argument("--cache", choices=sorted(DTYPES), default="bf16", help="KV cache dtype (default bf16)")
    ap.add_argument("--pdl", default="auto", help="launch the split-K reduce with programmatic dependent launch: "
                    "auto, 0, 1, comma-separated (default auto: on sm_90+)")
    ap.add_argument("--split-reduce", default="auto", help="who merges split-K partials: fused (the last split "
                    "program), kernel (a second launch), auto (the launcher's choice), comma-separated "
                    "(default auto)")
    args = parse_with_knobs(ap, argv, {"splits": "num_splits values", "block-n": "tokens per K/V tile "
                                       "(powers of two >= 16)", "warps": "num_warps values",
                                       "stages": "num_stages values"})
    if args.batch < 1 or args.context < 1:
        ap.error("--batch and --context must be >= 1")
    reduces = [v.strip() for v in args.split_reduce.split(",")]
    if any(v not in SPLIT_REDUCES + ("auto",) for v in reduces):
        ap.error(f"--split-reduce takes auto, {', '.join(SPLIT_REDUCES)}, got '{args.split_reduce}'")
    args.split_reduce = [None if v == "auto" else v for v in reduces]
    pdl = {"auto": None, "0": False, "1": True}
    if any(v.strip() not in pdl for v in args.pdl.split(",")):
        ap.error(f"--pdl takes auto, 0 and 1, got '{args.pdl}'")
    args.pdl = [pdl[v.strip()] for v in args.pdl.split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if cuda_missing("sweep_decode"):
        return 2
    import kernels
    from bench.ceilings import measure_read, measure_read_floor
    from bench.figures import check_close
    from bench.peers import gather_sdpa_decode
    from bench.problems import decode_problem
    from bench.timing import L2Flush, time_gpu
    from kernels.decode_splits import choose_decode_config

    flush = L2Flush("cuda")
    read_gbps, _ = measure_read(flush, torch.device("cuda"))
    torch.cuda.empty_cache()
    hq, hkv, d = args.heads
    p = decode_problem(args.batch, args.context, hq, hkv, d, DTYPES[args.cache], device="cuda")
    ref = gather_sdpa_decode(p.query, p.kv_cache, p.block_tables, p.context_lens, p.scale, p.context,
                             p.kv_scales, uniform=True)
    nbytes = p.bytes_moved()
    out = torch.empty_like(p.query)
    rows = []
    combos = list(itertools.product(args.splits, args.block_n, args.warps, args.stages, args.pdl,
                                    args.split_reduce))
    if (None,) * 6 not in combos:
        combos.insert(0, (None,) * 6)      # the heuristic's choice: the baseline
    print(f"decode {args.cache} B={args.batch} L={args.context} {hq}/{hkv}/{d}: {nbytes / 1e6:.1f} MB; "
          f"read ceiling {read_gbps:.0f} GB/s; {len(combos)} configurations")
    floor_s, launch_s = measure_read_floor(nbytes, flush, p.query.device)
    print(f"a plain read of the same bytes: {floor_s * 1e6:.1f} us ({100 * nbytes / floor_s / 1e9 / read_gbps:.1f}% "
          f"of the ceiling); a one-program launch: {launch_s * 1e6:.1f} us")
    for i, (splits, block_n, warps, stages, pdl, split_reduce) in enumerate(combos, 1):
        launch = dict(num_splits=splits, block_n=block_n, num_warps=warps, num_stages=stages)
        cfg = choose_decode_config(args.batch, hkv, d, p.kv_cache.element_size(), p.context,
                                   p.query.device, **launch)
        kw = dict(launch, pdl=pdl, split_reduce=split_reduce)
        label = f"splits={cfg.num_splits} block_n={cfg.block_n} warps={cfg.num_warps} stages={cfg.num_stages}"
        label += "" if pdl is None else f" pdl={int(pdl)}"
        label += "" if split_reduce is None or cfg.num_splits == 1 else f" reduce={split_reduce}"
        t0 = time.perf_counter()
        try:
            err = check_close(label, kernels.paged_decode(p.query, p.kv_cache, p.block_tables, p.context_lens,
                                                          p.scale, p.kv_scales, **kw), ref)
            samples = time_gpu(lambda: kernels.paged_decode(p.query, p.kv_cache, p.block_tables, p.context_lens,
                                                            p.scale, p.kv_scales, out, check_indices=False,
                                                            max_context_len=p.context, **kw), flush)
        except Exception as e:  # a config the compiler rejects (shared memory, registers): report, go on
            print(f"[{i}/{len(combos)}] {label}: FAILED {type(e).__name__}: {str(e).splitlines()[0][:160]}")
            rows.append({"config": label, "auto": kw == AUTO,
                         "error": f"{type(e).__name__}: {e}"[:400]})
            continue
        gbps = nbytes / samples.median / 1e9
        rows.append({"config": label, "auto": kw == AUTO, "split_reduce": split_reduce, "num_splits": cfg.num_splits,
                     "block_n": cfg.block_n, "num_warps": cfg.num_warps, "num_stages": cfg.num_stages, "pdl": pdl,
                     "median_s": samples.median, "iqr_s": samples.iqr, "gbps": gbps,
                     "pct_read_ceiling": 100 * gbps / read_gbps, "rel_error": err, "timing": samples.mode})
        print(f"[{i}/{len(combos)}] {label}: {samples.median * 1e6:.1f} us, {100 * gbps / read_gbps:.1f}% "
              f"({time.perf_counter() - t0:.1f} s incl. compile)", flush=True)
    base = next(r for r in rows if r["auto"])
    timed = sorted((r for r in rows if "median_s" in r), key=lambda r: r["median_s"])
    print("\n| config | µs | GB/s | % read ceiling | vs auto |\n|---|---|---|---|---|")
    for r in timed:
        vs = base["median_s"] / r["median_s"] if "median_s" in base else float("nan")
        print(f"| {r['config']}{' (auto)' if r['auto'] else ''} | {r['median_s'] * 1e6:.1f} | {r['gbps']:.0f} | "
              f"{r['pct_read_ceiling']:.1f} | {vs:.3f}× |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"problem": {"cache": args.cache, "batch": args.batch, "context": args.context,
                                   "heads": [hq, hkv, d], "bytes": nbytes},
                       "ceiling_read_gbps": read_gbps, "same_size_read_s": floor_s, "one_program_launch_s": launch_s,
                       "device": torch.cuda.get_device_name(),
                       "torch": torch.__version__, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
