"""Check the sm_90 Gluon prefill against the Triton kernel, then time both beside FlashInfer.

    python3 -m bench.probe_prefill_sm90 [--json out.json] [--no-time] [--variants]

`--variants` adds the schedules of kernels/prefill_sm90.py that paged_prefill does
not run (one consumer partition for both warpgroups; SPLIT with TURNS), checked after
the default kernel on every case and timed after it on every row (H200, session 11:
the one-partition form 0.77-0.87x the default, TURNS no faster).

Correctness first, on every case: full prefills, an extend, and varlen batches
whose unwritten cache slots hold NaN (pages 16, 32 and 256; head_dim 64 and
128), each compared with kernels/paged_prefill.py's Triton kernel on the same
plan (relative error < 2e-2, no NaN). Then the issue's prefill rows are timed
like the benchmarks (precomputed plan, CUDA graph, L2 flushed): Triton, Gluon
and FlashInfer fa3/fa2 when installed. Needs an sm_90 device.
"""
from __future__ import annotations

import argparse
import sys

import torch

from bench.probe_run import checks_then_timings


def _varlen_case(shapes: list[tuple[int, int]], hq: int, hkv: int, d: int, page: int, seed: int = 0):
    """A batch of (cached prefix, new tokens) sequences on shuffled pages of a cache
    whose unwritten slots are NaN."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    per_seq = [-(-(c + n) // page) for c, n in shapes]
    num_blocks = sum(per_seq) + 3
    perm = torch.randperm(num_blocks, generator=gen, device="cuda").to(torch.int32)
    tables = torch.zeros((len(shapes), max(per_seq)), dtype=torch.int32, device="cuda")
    cache = torch.full((num_blocks, 2, page, hkv, d), float("nan"), dtype=torch.bfloat16, device="cuda")
    used = 0
    for i, ((c, n), blocks) in enumerate(zip(shapes, per_seq)):
        tables[i, :blocks] = perm[used:used + blocks]
        used += blocks
        slots = torch.arange(c + n, device="cuda")
        rows = tables[i, slots // page].long()
        kv = torch.randn((2, c + n, hkv, d), generator=gen, device="cuda").to(torch.bfloat16)
        cache[rows, 0, slots % page] = kv[0]
        cache[rows, 1, slots % page] = kv[1]
    lens = torch.tensor([c + n for c, n in shapes], dtype=torch.int32, device="cuda")
    qsl = torch.tensor([0] + [n for _, n in shapes], device="cuda").cumsum(0).to(torch.int32)
    query = torch.randn((int(qsl[-1]), hq, d), generator=gen, device="cuda").to(torch.bfloat16)
    return query, cache, tables, qsl, lens, d ** -0.5


def _plan(query, cache, tables, qsl, lens, kernel: str):
    from kernels.prefill_plan import plan_prefill
    return plan_prefill(qsl, lens, tables, query.shape[0], cache.shape[0], cache.shape[2], query.shape[2],
                        query.dtype, True, block_m=128, kernel=kernel)


def _run_both(query, cache, tables, qsl, lens, scale):
    import kernels
    ref = kernels.paged_prefill(query, cache, tables, qsl, lens, scale,
                                plan=_plan(query, cache, tables, qsl, lens, "triton"))
    out = kernels.paged_prefill(query, cache, tables, qsl, lens, scale,
                                plan=_plan(query, cache, tables, qsl, lens, "sm90"))
    torch.cuda.synchronize()
    return ref, out


VARIANTS = {"gluon_one_partition": (False, False), "gluon_split_turns": (True, True)}


def _variant(query, cache, tables, qsl, lens, scale, split: bool, turns: bool):
    """A schedule's output tensor and a no-argument call writing it."""
    from kernels.prefill_sm90_launch import Sm90Launch
    plan = _plan(query, cache, tables, qsl, lens, "sm90")
    out = torch.empty_like(query)
    launch = Sm90Launch(query, cache, tables, out, scale, plan.tile_map.shape[1], split=split, turns=turns)
    return out, lambda: launch(query, cache, tables, qsl, lens, out, plan.tile_map)


def _compare(label: str, out: torch.Tensor, ref: torch.Tensor) -> dict:
    err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
    nan = bool(torch.isnan(out).any().item())
    worst = (out.float() - ref.float()).abs().max().item()
    ok = err < 2e-2 and not nan
    print(f"{'ok  ' if ok else 'FAIL'} {label}: rel {err:.2e} max abs {worst:.3e}{' NaN!' if nan else ''}", flush=True)
    return {"case": label, "rel_error": err, "max_abs": worst, "nan": nan, "ok": ok}


def check_cases(variants: bool = False) -> list[dict]:
    from bench.problems import extend_problem, prefill_problem
    cases = []
    for label, p in (("prefill B=2 L=1024 32/32/128", prefill_problem(2, 1024, 32, 32, 128)),
                     ("prefill B=2 L=1000 32/8/128", prefill_problem(2, 1000, 32, 8, 128)),
                     ("extend 512 over 3584 B=2 32/8/128", extend_problem(2, 512, 3584, 32, 8, 128)),
                     ("prefill B=2 L=777 16/4/64", prefill_problem(2, 777, 16, 4, 64))):
        cases.append((label, (p.query, p.kv_cache, p.block_tables, p.query_start_loc, p.context_lens, p.scale)))
    mixed = [(0, 1), (0, 130), (17, 200), (300, 129), (1000, 5), (0, 257), (5000, 300)]
    for hq, hkv, d in ((32, 8, 128), (8, 2, 64)):
        for page in (16, 32, 256):
            cases.append((f"varlen NaN-filled {hq}/{hkv}/{d} page {page}", _varlen_case(mixed, hq, hkv, d, page)))
    rows = []
    for label, args in cases:
        ref, out = _run_both(*args)
        rows.append(_compare(label, out, ref))
        for name, (split, turns) in (VARIANTS.items() if variants else ()):
            v_out, run = _variant(*args, split, turns)
            run()
            torch.cuda.synchronize()
            rows.append(_compare(f"{name}: {label}", v_out, ref))
    return rows


def time_rows(variants: bool = False) -> list[dict]:
    import kernels
    from bench import peer_flashinfer as fi
    from bench.problems import extend_problem, prefill_problem
    from bench.timing import L2Flush, time_gpu
    from kernels.prefill_plan import plan_prefill
    flush = L2Flush("cuda")
    reason = fi.unavailable_reason()
    ws = fi.workspace() if reason is None else None
    rows = []
    for label, p in (("prefill B=4 L=4096 32/32/128", prefill_problem(4, 4096, 32, 32, 128)),
                     ("prefill B=4 L=4096 32/8/128", prefill_problem(4, 4096, 32, 8, 128)),
                     ("prefill B=4 L=1024 32/32/128", prefill_problem(4, 1024, 32, 32, 128)),
                     ("extend 512 over 3584 B=4 32/8/128", extend_problem(4, 512, 3584, 32, 8, 128))):
        args = (p.query, p.kv_cache, p.block_tables, p.query_start_loc, p.context_lens, p.scale)
        flops = p.causal_flops()
        num_blocks, _, page, _, d = p.kv_cache.shape
        auto = plan_prefill(p.query_start_loc, p.context_lens, p.block_tables, p.query.shape[0], num_blocks, page, d,
                            p.query.dtype, True, kernel="triton")
        plan = _plan(*args[:5], "sm90")
        out = torch.empty_like(p.query)
        row = {"problem": label, "flops": flops}
        timings = {
            "triton": lambda: kernels.paged_prefill(*args, out=out, plan=auto),
            "gluon": lambda: kernels.paged_prefill(*args, out=out, plan=plan),
        }
        for name, (split, turns) in (VARIANTS.items() if variants else ()):
            timings[name] = _variant(*args, split, turns)[1]
        if ws is not None:
            for setting in fi.PREFILL_SETTINGS:
                try:
                    timings[f"fa_{setting}"] = fi.prefill_fn(ws, *args[:6], setting)
                except Exception as exc:
                    row[f"fa_{setting}_note"] = f"{type(exc).__name__}: {exc}"[:200]
        else:
            row["flashinfer_note"] = reason
        for name, fn in timings.items():
            try:
                s = time_gpu(fn, flush)
                row[f"{name}_s"] = s.median
                row[f"{name}_tflops"] = flops / s.median / 1e12
                s_eager = time_gpu(fn, flush, use_graph=False) if name == "gluon" else None
                if s_eager is not None:
                    row["gluon_eager_s"] = s_eager.median
            except Exception as exc:
                row[f"{name}_note"] = f"{type(exc).__name__}: {exc}"[:300]
        print(label + ": " + ", ".join(f"{k[:-7]} {v:.0f}" for k, v in row.items() if k.endswith("_tflops"))
              + " TFLOP/s", flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m bench.probe_prefill_sm90", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the checks and timings here")
    ap.add_argument("--no-time", action="store_true", help="correctness only")
    ap.add_argument("--variants", action="store_true",
                    help="also check and time the schedules paged_prefill does not run")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0):
        print("probe_prefill_sm90: needs an sm_90 CUDA device", file=sys.stderr)
        return 2
    return checks_then_timings(torch.cuda.get_device_name(), lambda: check_cases(args.variants),
                               lambda: time_rows(args.variants), args.no_time, args.json)


if __name__ == "__main__":
    sys.exit(main())
