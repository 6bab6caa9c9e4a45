"""Check the register-only fp8/int8 decode kernel against the float64 oracle, then time
it beside our Triton fp8/int8 and bf16 decode.

    python3 -m bench.probe_decode_quant_mma [--json out.json] [--no-time]

Correctness first (the probe's first run, session 11, was the kernel's first on a
card), on every case, fp8 and int8 (GQA groups 1/4/8/16, pages 16/32/256, contexts that end
inside a tile, more splits than some contexts fill, unwritten cache slots
poisoned with NaN), each held to the oracle on the dequantised cache by the
decode conformance's own bounds (conformance/kernel_support.py's assert_close),
with the Triton kernel's error beside it. Then the
issue's rows (fp8: B=64 L=4096 and L=16384, B=8 L=4096; int8: B=64 L=4096; 32/8/128, block 16) are
timed like the benchmarks (CUDA graph, L2 flushed) over its schedules (tile, prefetch depth) and 1-16 splits
(up to 4 merged in-kernel, more by the reduce kernel: `plan_quant_mma`'s default), with the eager
figure of the fastest beside it. Needs a CUDA device of sm_89+.
"""
from __future__ import annotations

import argparse
import sys

import torch

from bench.probe_run import checks_then_timings

READ_CEILING_GBS = 4611.0   # H200 read stream, bench/README.md (session 9's suite run)


def check_cases() -> list[dict]:
    import kernels
    from conformance.kernel_support import assert_close, tolerance
    from conformance.paged_cases import make_paged_kv, rel_error
    from kernels.decode_quant_mma_plan import decode_quant_mma
    from reference import attention as ref_attn
    gen = torch.Generator().manual_seed(20261203)
    cases = [
        # (label, context lens, Hq, Hkv, page, splits)
        ("G4 page16 short+long", [1, 37, 300, 1000], 8, 2, 16, 1),
        ("G4 page16 splits3", [1, 37, 300, 1000], 8, 2, 16, 3),
        ("G8 page32 splits2", [33, 64, 65, 511], 32, 4, 32, 2),
        ("G1 page16 splits4", [5, 129, 700], 8, 8, 16, 4),
        ("G16 page256 splits2", [257, 1500], 32, 2, 256, 2),
        ("G4 page16 more splits than tokens", [2, 40], 8, 2, 16, 8),
    ]
    rows = []
    for (label, lens, hq, hkv, page, splits), dtype in [(c, torch.float8_e4m3fn) for c in cases] + \
            [(c, torch.int8) for c in cases[:3]]:
        label = f"{'int8' if dtype == torch.int8 else 'fp8'} {label}"
        kv = make_paged_kv(gen, lens, hkv, 128, page, dtype, "cuda")
        q = torch.randn((len(lens), hq, 128), generator=gen).to("cuda", torch.bfloat16)
        scale = 128 ** -0.5
        ref = ref_attn.paged_decode(q, kv.kv_cache, kv.block_tables, kv.context_lens, scale, kv.kv_scales)
        tile = 16 if "splits3" in label or "G1" in label or "page256" in label else 32   # every schedule
        depth = 2 if "G1" in label or "page256" in label else 1          # both on tiles of 16
        label += f" tile {tile} depth {depth}"
        ours = decode_quant_mma(q, kv.kv_cache, kv.kv_scales, kv.block_tables, kv.context_lens, scale, max(lens),
                                splits, tile=tile, depth=depth)
        triton_out = kernels.paged_decode(q, kv.kv_cache, kv.block_tables, kv.context_lens, scale,
                                          kv_scales=kv.kv_scales)
        torch.cuda.synchronize()
        err, terr = rel_error(ours, ref), rel_error(triton_out, ref)
        try:       # the decode conformance's own per-row and per-element bounds
            assert_close(ours, ref, tolerance(q.dtype), label)
            why = ""
        except AssertionError as exc:
            why = str(exc)
        rows.append({"case": label, "error": err, "triton_error": terr, "ok": not why, "why": why})
        print(f"{'ok  ' if not why else 'FAIL'} {label}: error {err:.3g} (Triton kernel {terr:.3g}) {why}",
              flush=True)
    return rows


def time_rows() -> list[dict]:
    from bench.ours import decode_call
    from bench.problems import decode_problem
    from bench.timing import L2Flush, time_gpu
    from kernels.decode_quant_mma_plan import SCHEDULES, decode_quant_mma
    flush = L2Flush("cuda")
    rows = []
    for batch, ctx, dtype in ((64, 4096, torch.float8_e4m3fn), (64, 16384, torch.float8_e4m3fn),
                              (8, 4096, torch.float8_e4m3fn), (64, 4096, torch.int8)):
        p8 = decode_problem(batch, ctx, 32, 8, 128, cache_dtype=dtype, seed=ctx)
        pb = decode_problem(batch, ctx, 32, 8, 128, seed=ctx)
        out = torch.empty_like(p8.query)
        quant_bytes = p8.kv_cache.numel() + p8.kv_scales.numel() * 4
        name = "int8" if dtype == torch.int8 else "fp8"
        row = {"problem": f"decode {name} B={batch} L={ctx} 32/8/128 block 16", "quant_bytes": quant_bytes,
               "bf16_bytes": pb.kv_cache.numel() * 2}
        # Our Triton decode as the benchmarks time it: unchecked, the context length known on the host
        # (a checked call's index-check kernel would be in the graph too).
        row["triton_bf16_s"] = time_gpu(decode_call(pb, out), flush).median
        row["triton_quant_s"] = time_gpu(decode_call(p8, out), flush).median
        best = None
        for tile, depth in SCHEDULES:
            for splits in (1, 2, 4, 8, 16):
                def call(splits=splits, tile=tile, depth=depth):
                    return decode_quant_mma(p8.query, p8.kv_cache, p8.kv_scales, p8.block_tables, p8.context_lens,
                                            p8.scale, ctx, splits, out, tile=tile, depth=depth)
                key = f"mma_tile{tile}_depth{depth}_splits{splits}_s"
                row[key] = time_gpu(call, flush).median
                if best is None or row[key] < row[best[3]]:
                    best = (tile, depth, splits, key)
        tile, depth, splits, key = best
        row["mma_best"] = {"tile": tile, "depth": depth, "splits": splits}
        row["mma_s"] = row[key]
        row["mma_eager_s"] = time_gpu(lambda: decode_quant_mma(p8.query, p8.kv_cache, p8.kv_scales, p8.block_tables,
                                                               p8.context_lens, p8.scale, ctx, splits, out, tile=tile,
                                                               depth=depth),
                                      flush, use_graph=False).median
        row["mma_vs_bf16"] = row["triton_bf16_s"] / row["mma_s"]
        row["triton_quant_vs_bf16"] = row["triton_bf16_s"] / row["triton_quant_s"]
        row["mma_read_fraction"] = quant_bytes / row["mma_s"] / 1e9 / READ_CEILING_GBS
        print(f"{row['problem']}: bf16 {row['triton_bf16_s'] * 1e6:.1f} us, Triton {name} "
              f"{row['triton_quant_s'] * 1e6:.1f} ({row['triton_quant_vs_bf16']:.2f}x), register-only "
              f"{row['mma_s'] * 1e6:.1f} us at tile {tile} depth {depth} splits {splits} "
              f"({row['mma_vs_bf16']:.2f}x bf16, "
              f"{row['mma_read_fraction']:.1%} of read; eager {row['mma_eager_s'] * 1e6:.1f}); tile/splits: "
              + ", ".join(f"{k[8:-2]} {v * 1e6:.1f}" for k, v in row.items() if k.startswith("mma_tile")), flush=True)
        rows.append(row)
        del p8, pb
        torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m bench.probe_decode_quant_mma", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the checks and timings here")
    ap.add_argument("--no-time", action="store_true", help="correctness only")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9):
        print("probe_decode_quant_mma: needs a CUDA device of sm_89 or newer (the paired e4m3 convert)",
              file=sys.stderr)
        return 2
    return checks_then_timings(torch.cuda.get_device_name(), check_cases, time_rows, args.no_time, args.json)


if __name__ == "__main__":
    sys.exit(main())
