"""paged_prefill on the GPU: causal TFLOP/s against SDPA's flash backend on the
same (unpaged) tensors, FlashInfer's fa3 and fa2 prefill on the same paged cache,
and the matmul ceiling of the same run.

Prefill: B=4, H=32 with Hkv in {32, 8}, D=128, L in {1024, 4096}, bf16, block 16;
causal FLOPs 2 * 2 * B * H * L * L * D / 2. Extend: 512 new tokens per sequence
over a 3,584-token cached prefix (B=4, 32/8/128); FLOPs count the causal pairs
(PrefillProblem.causal_flops). BENCH_FLASHINFER=none leaves FlashInfer out.
Each row records which kernel paged_prefill ran (`kernel`: on sm_90 the Gluon one,
kernels/prefill_route.py), its eager (no CUDA graph) time, and there the Triton
kernel's time too.
"""
from __future__ import annotations

import gc
import os

import pytest
import torch

from bench.figures import check_close, fmt_ratio, ratio, record
from bench.fingerprint import fingerprint
from bench.problems import extend_problem, prefill_problem

# (batch, new tokens, cached tokens, Hq, Hkv, D): cached 0 is a prefill.
CASES = [(4, seq, 0, 32, hkv, 128) for hkv in (32, 8) for seq in (1024, 4096)] + [(4, 512, 3584, 32, 8, 128)]


def _case_id(case: tuple) -> str:
    batch, new, cached, hq, hkv, d = case
    if cached:
        return f"extend-bf16-B{batch}-Q{new}-C{cached}-h{hq}x{hkv}x{d}"
    return f"bf16-B{batch}-L{new}-h{hq}x{hkv}x{d}"


def _sdpa_peer(p, hq: int, hkv: int, extend: bool, info: dict):
    """SDPA on the unpaged tensors (flash for a prefill, its lower-right causal bias for an
    extend): the reference output and the timed call."""
    from bench.peers import sdpa_extend, sdpa_flash_prefill
    attend = sdpa_extend if extend else sdpa_flash_prefill
    k, v = p.k, p.v
    if extend and hq != hkv:   # the causal bias takes no GQA: repeated heads, outside timing
        info["peer_note"] = "SDPA lower-right causal bias with K/V heads repeated outside timing"
        k, v = (t.repeat_interleave(hq // hkv, dim=1) for t in (p.k, p.v))
    try:
        ref = attend(p.q, k, v, p.scale)
    except RuntimeError as exc:  # flash without GQA support: hand it the repeated heads
        info["peer_note"] = f"flash refused GQA ({str(exc).splitlines()[0][:80]}); K/V repeated outside timing"
        k, v = (t.repeat_interleave(hq // hkv, dim=1) for t in (p.k, p.v))
        ref = attend(p.q, k, v, p.scale)
    return ref.transpose(1, 2).reshape(p.query.shape), lambda: attend(p.q, k, v, p.scale)


@pytest.mark.gpu
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_paged_prefill(case, benchmark, ceilings, gpu_timer, flashinfer_workspace, bench_deadline) -> None:
    from bench.ours import prefill_call, prefill_kernel
    from bench.peer_flashinfer import PREFILL_SETTINGS, prefill_fn, time_settings
    bench_deadline()
    gc.collect()
    torch.cuda.empty_cache()
    batch, new, cached, hq, hkv, d = case
    seed = new + cached + hkv
    p = extend_problem(batch, new, cached, hq, hkv, d, device="cuda", seed=seed) if cached else \
        prefill_problem(batch, new, hq, hkv, d, device="cuda", seed=seed)
    kind = "extend" if cached else "prefill"
    info: dict[str, object] = {"kind": kind, "batch": batch, "seq_len": new + cached, "new_tokens": new,
                               "cached_tokens": cached, "num_heads": hq, "num_kv_heads": hkv, "head_dim": d,
                               "block_size": 16, "causal": True, **ceilings,
                               "fingerprint": fingerprint(kind=kind, batch=batch, seq_len=new + cached,
                                                          new_tokens=new, shape=[hq, hkv, d], block_size=16,
                                                          causal=True, seed=seed)}
    ref, sdpa = _sdpa_peer(p, hq, hkv, bool(cached), info)
    info["rel_error_vs_sdpa"] = check_close("paged_prefill vs SDPA flash",
                                            prefill_call(p, torch.empty_like(p.query), checked=True)(), ref)
    out = torch.empty_like(p.query)
    ours = gpu_timer(prefill_call(p, out))
    check_close("paged_prefill (as timed)", out, ref)
    info["kernel"] = prefill_kernel(p)
    # What a caller outside a CUDA graph gets, and the other kernel of the same launcher.
    info["eager_median_s"] = gpu_timer(prefill_call(p, out), use_graph=False).median
    if info["kernel"] != "triton":
        twin = prefill_call(p, torch.empty_like(p.query), kernel="triton")
        info["rel_error_triton_kernel_vs_sdpa"] = check_close("paged_prefill kernel='triton'", twin(), ref)
        info["triton_kernel_median_s"] = gpu_timer(twin).median
        info["triton_kernel_tflops"] = p.causal_flops() / info["triton_kernel_median_s"] / 1e12
    peer = gpu_timer(sdpa)
    info.update(peer.summary("sdpa_"))
    del info["sdpa_samples_s"]
    if os.environ.get("BENCH_FLASHINFER", "all") == "none":
        info["flashinfer_note"] = "skipped by BENCH_FLASHINFER=none"
    else:
        time_settings(lambda s: prefill_fn(flashinfer_workspace, p.query, p.kv_cache, p.block_tables,
                                           p.query_start_loc, p.context_lens, p.scale, s),
                      PREFILL_SETTINGS, ref, ours, gpu_timer, check_close, info)
        for s in PREFILL_SETTINGS:
            if f"flashinfer_{s}_median_s" in info:
                info[f"flashinfer_{s}_tflops"] = p.causal_flops() / info[f"flashinfer_{s}_median_s"] / 1e12

    tflops = p.causal_flops() / ours.median / 1e12
    info.update(flops=p.causal_flops(), tflops=tflops, sdpa_tflops=p.causal_flops() / peer.median / 1e12,
                pct_matmul_ceiling=100 * tflops / ceilings["ceiling_matmul_tflops"],
                speedup_vs_sdpa=ratio(ours, peer))
    record(benchmark, ours, info)
    print(f"\nprefill {_case_id(case)}: {ours.median * 1e3:.3f} ms, {tflops:.0f} TFLOP/s = "
          f"{info['pct_matmul_ceiling']:.1f}% of matmul ceiling; {fmt_ratio(info['speedup_vs_sdpa'], 'SDPA')}, "
          f"{fmt_ratio(info.get('speedup_vs_flashinfer'), 'FlashInfer ' + str(info.get('flashinfer_best')))}"
          f" [{ours.mode}]")
