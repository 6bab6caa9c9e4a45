"""Launch every kernel once on modest shapes and check each result against the
float64 oracle: the workload `compute-sanitizer --tool memcheck` runs over
(a full pytest under memcheck is far too slow).

    compute-sanitizer --tool memcheck python3 -m bench.sanitize_kernels

Shapes cover the paths that index memory differently: block tables holding the
last block of the cache, contexts of 1 / block_size + 1 / long (split-K),
padding slots (-1) in write_kv, GQA 9/3, head_dim 64 and 128, bf16/fp8/int8, and
on a Hopper card the sm_90 prefill kernel (TMA page copies) beside the Triton one.
Exit status 0 when every check passed, 1 otherwise.
"""
from __future__ import annotations

import argparse
import itertools
import sys
from typing import Callable

import torch

import kernels
from bench.dtypes import CACHE_DTYPES
from conformance.paged_cases import make_paged_kv, rel_error
from reference import attention as ref_attn
from reference.quant import dequantize_rows, quantize_rows

DTYPES = CACHE_DTYPES
BOUND = 2e-2


def check_decode(device: str, gen: torch.Generator, cache: str) -> float:
    worst = 0.0
    for hq, hkv, d, lens in ((8, 2, 128, [1, 17, 900]), (9, 3, 64, [16, 33, 5])):
        kv = make_paged_kv(gen, lens, hkv, d, 16, DTYPES[cache], device, num_blocks=128)
        q = torch.randn((len(lens), hq, d), generator=gen).to(device, torch.bfloat16)
        ref = ref_attn.paged_decode(q, kv.kv_cache, kv.block_tables, kv.context_lens, d ** -0.5, kv.kv_scales)
        # fp8/int8 at head_dim 128: "auto" is the register-only kernel on sm_89+, so the Triton one too
        routes = ("auto", "triton") if kv.kv_scales is not None and d == 128 else ("auto",)
        # The heuristic's split and a forced 4 (the register-only kernel: its many splits go to the
        # reduce kernel, 4 merge in-kernel on atomic tickets)
        for splits, kernel in itertools.product((None, 4), routes):
            out = kernels.paged_decode(q, kv.kv_cache, kv.block_tables, kv.context_lens, d ** -0.5,
                                       kv_scales=kv.kv_scales, num_splits=splits, kernel=kernel)
            worst = max(worst, rel_error(out, ref))
    return worst


def check_prefill(device: str, gen: torch.Generator, cache: str, kernel: str = "auto",
                  head_dim: int = 64, block_size: int = 16) -> float:
    hq, hkv, d = 8, 2, head_dim
    lens, qlens = [37, 40, 1], [5, 40, 1]  # a cached prefix, a whole prompt, a decode row
    kv = make_paged_kv(gen, lens, hkv, d, block_size, DTYPES[cache], device, num_blocks=64)
    q = torch.randn((sum(qlens), hq, d), generator=gen).to(device, torch.bfloat16)
    starts = torch.tensor([0, 5, 45, 46], dtype=torch.int32, device=device)
    ref = ref_attn.paged_prefill(q, kv.kv_cache, kv.block_tables, starts, kv.context_lens, d ** -0.5, kv.kv_scales)
    # The sm_90 kernel tiles 128 query rows; these short prompts would get a smaller tile.
    rows = {"block_m": 128} if kernel == "sm90" else {}
    out = kernels.paged_prefill(q, kv.kv_cache, kv.block_tables, starts, kv.context_lens, d ** -0.5,
                                kv_scales=kv.kv_scales, kernel=kernel, **rows)
    return rel_error(out, ref)


def sm90_available(device: str) -> bool:
    """Whether the sm_90 Gluon prefill kernel can run here (a Hopper card)."""
    return device.startswith("cuda") and torch.cuda.get_device_capability(device) == (9, 0)


def check_write(device: str, gen: torch.Generator, cache: str) -> float:
    tokens, hkv, d, blocks, bs = 100, 3, 128, 10, 16
    key = torch.randn((tokens, hkv, d), generator=gen).to(device, torch.bfloat16)
    value = torch.randn((tokens, hkv, d), generator=gen).to(device, torch.bfloat16)
    slots = torch.randperm(blocks * bs, generator=gen)[:tokens]
    slots[::7] = -1
    kv_cache = torch.zeros((blocks, 2, bs, hkv, d), dtype=DTYPES[cache], device=device)
    scales = torch.zeros((blocks, 2, bs, hkv), device=device) if cache != "bf16" else None
    kernels.write_kv(key, value, kv_cache, slots.to(device), kv_scales=scales)
    live = slots >= 0
    blk, off = slots[live] // bs, slots[live] % bs
    worst = 0.0
    for i, rows in enumerate((key, value)):
        got = kv_cache.cpu()[blk, i, off]
        want = rows.cpu()[live]
        if scales is not None:
            got = dequantize_rows(got, scales.cpu()[blk, i, off])
            want = dequantize_rows(*quantize_rows(want, DTYPES[cache]))
        worst = max(worst, rel_error(got, want))
    return worst


def check_copy_swap(device: str, gen: torch.Generator) -> float:
    caches = [torch.randn((12, 2, 16, 2, 64), generator=gen).to(device, torch.bfloat16) for _ in range(2)]
    before = [c.cpu() for c in caches]
    pairs = torch.tensor([[0, 11], [3, 4], [7, 1]], dtype=torch.int64)
    kernels.copy_blocks(caches, pairs)
    worst = 0.0
    for c, b in zip(caches, before):
        want = b.clone()
        want[pairs[:, 1]] = b[pairs[:, 0]]
        worst = max(worst, float((c.cpu().float() - want.float()).abs().max()))
    host = torch.zeros((12, 2, 16, 2, 64), dtype=torch.bfloat16)
    kernels.swap_blocks(caches[0], host, pairs)
    back = torch.zeros_like(caches[0])
    kernels.swap_blocks(host, back, torch.stack([pairs[:, 1], pairs[:, 0]], 1))
    worst = max(worst, float((back.cpu()[pairs[:, 0]].float() - caches[0].cpu()[pairs[:, 0]].float()).abs().max()))
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu with TRITON_INTERPRET=1")
    args = parser.parse_args(argv)
    gen = torch.Generator().manual_seed(20261128)
    checks: list[tuple[str, Callable[[], float], float]] = []
    for cache in DTYPES:
        checks += [(f"paged_decode {cache}", lambda c=cache: check_decode(args.device, gen, c), BOUND),
                   (f"paged_prefill {cache} (Triton kernel)",
                    lambda c=cache: check_prefill(args.device, gen, c, "triton"), BOUND),
                   (f"write_kv {cache}", lambda c=cache: check_write(args.device, gen, c), 0.0 if cache == "bf16" else 1e-2)]
    if sm90_available(args.device):
        # The Gluon kernel's TMA copies address pages by row: both head dims, pages 16 and 32.
        for cache in ("bf16",):
            for d, bs in ((64, 16), (128, 32)):
                checks.append((f"paged_prefill {cache} (sm_90 kernel) head_dim {d} block {bs}",
                               lambda c=cache, d=d, bs=bs: check_prefill(args.device, gen, c, "sm90", d, bs), BOUND))
    checks.append(("copy_blocks + swap_blocks", lambda: check_copy_swap(args.device, gen), 0.0))
    failed = 0
    for name, fn, bound in checks:
        try:
            err = fn()
            ok = err <= bound
            print(f"{'ok  ' if ok else 'FAIL'} {name}: error {err:.3g} (bound {bound:g})", flush=True)
        except Exception as exc:  # report and go on: memcheck should see every kernel
            ok = False
            print(f"FAIL {name}: {type(exc).__name__}: {exc}", flush=True)
        failed += not ok
    print(f"{len(checks) - failed}/{len(checks)} kernel checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
