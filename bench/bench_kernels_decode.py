"""paged_decode on the GPU: time, bytes, GB/s, % of the read ceiling, and the same
problem through FlexAttention (paged) and gather + SDPA in the same test.

Grid: batch {1, 8, 64, 256} x context {512, 4096, 16384} x (Hq, Hkv, D) in
{(32, 8, 128), (32, 32, 128), (9, 3, 64)}, block 16, bf16; B=256 L=1024 at
32/8/128; fp8 and int8 caches at the headline shape (B=64, L=4096, 32/8/128).
FlashInfer (bench/peer_flashinfer.py) reads the same cache tensor: its CUDA-core
and tensor-core fa2 decode on every bf16 and fp8 row, fa3 at the headline shape.
Environment: BENCH_QUICK=1 runs a subset; BENCH_FLEX=all|headline|none picks
where the FlexAttention peer runs (each new shape family costs compilations);
BENCH_FLASHINFER=all|headline|none the same for FlashInfer (JIT builds per head
dim and dtype).
"""
from __future__ import annotations

import gc
import os
import re
import time

import pytest
import torch
from torch._inductor.exc import InductorError

from bench.dtypes import cache_dtypes
from bench.figures import check_close, fmt_ratio, ratio, record
from bench.fingerprint import fingerprint
from bench.problems import cache_bytes, decode_problem

BATCHES = (1, 8, 64, 256)
CONTEXTS = (512, 4096, 16384)
SHAPES = ((32, 8, 128), (32, 32, 128), (9, 3, 64))
HEADLINE = (64, 4096, (32, 8, 128))
MAX_CACHE_BYTES = 60e9  # leaves room on an 80 GB card for the gather peer's copy
QUICK = {(1, 16384), (1, 4096), (8, 4096), (64, 4096), (256, 512)}
# Beyond the grid, at the headline heads: where FlashInfer fa2 led ours (B=256 L=1024).
EXTRA = [(256, 1024)]
FLEX_PAGE = 128  # flex's own paged layout at the page size its tiles like (torch's helper default)
DTYPES = cache_dtypes("bf16", "fp8", "int8")


def _in_quick_subset(shape: tuple, batch: int, context: int) -> bool:
    if shape == HEADLINE[2]:
        return (batch, context) in QUICK
    return (batch, context) == HEADLINE[:2]


def _cases() -> list:
    quick = os.environ.get("BENCH_QUICK") == "1"
    cases = []
    for shape in SHAPES:
        for batch in BATCHES:
            for context in CONTEXTS:
                if quick and not _in_quick_subset(shape, batch, context):
                    continue
                size = cache_bytes(batch, context, shape[1], shape[2], torch.bfloat16)
                marks = ()
                if size > MAX_CACHE_BYTES:
                    marks = pytest.mark.skip(reason=f"cache of {size / 1e9:.1f} GB > {MAX_CACHE_BYTES / 1e9:.0f} GB "
                                             "(no room for it and the gather peer on an 80 GB card)")
                cases.append(pytest.param(("bf16", batch, context, shape), marks=marks))
    cases += [pytest.param(("bf16", batch, context, HEADLINE[2])) for batch, context in EXTRA]
    for dtype in ("fp8", "int8"):
        cases.append(pytest.param((dtype, *HEADLINE)))
    return cases


def _case_id(case: tuple) -> str:
    dtype, batch, context, (hq, hkv, d) = case
    return f"{dtype}-B{batch}-L{context}-h{hq}x{hkv}x{d}"


def _flex_wanted(case: tuple) -> str | None:
    """Why the FlexAttention peer does not run for this case, or None when it does."""
    dtype, batch, context, shape = case
    mode = os.environ.get("BENCH_FLEX", "all")
    if dtype != "bf16":
        return "FlexAttention takes no int8/fp8 KV cache"
    if mode == "none" or (mode == "headline" and shape != HEADLINE[2]):
        return f"skipped by BENCH_FLEX={mode} (compile time)"
    return None


def _flashinfer_settings(case: tuple) -> tuple[tuple[str, ...], str | None]:
    """FlashInfer's decode settings for this case, and why the others do not run."""
    dtype, batch, context, shape = case
    mode = os.environ.get("BENCH_FLASHINFER", "all")
    if dtype == "int8":
        return (), "FlashInfer takes no int8 KV cache"
    headline = (batch, context, shape) == HEADLINE
    if mode == "none" or (mode == "headline" and not headline):
        return (), f"skipped by BENCH_FLASHINFER={mode} (JIT build time)"
    if dtype == "bf16" and headline:
        return ("cuda_core", "fa2", "fa3"), None
    return ("cuda_core", "fa2"), "fa3 only at the headline shape (3-5x slower for decode; ~100 s per build)"


def _time_flashinfer(p, dtype: str, case: tuple, ours, ref, gpu_timer, ws, info: dict) -> None:
    """FlashInfer's settings on our cache tensor. fp8: per-tensor scale 1 (it has no
    per-token scales), so it is checked against attention over the raw fp8 values."""
    from bench.peer_flashinfer import decode_fn, time_settings
    from bench.peers import gather_sdpa_decode
    settings, info["flashinfer_settings_note"] = _flashinfer_settings(case)
    if not settings:
        return
    if dtype == "fp8":
        ref = gather_sdpa_decode(p.query, p.kv_cache, p.block_tables, p.context_lens, p.scale, p.context,
                                 None, uniform=True)
    time_settings(lambda s: decode_fn(ws, p.query, p.kv_cache, p.block_tables, p.context_lens, p.scale, s),
                  settings, ref, ours, gpu_timer, check_close, info)


@pytest.fixture(scope="module")
def flex_attend():
    """flex_attention compiled once for the module, with room for one graph per batch
    and head shape (flex_decode_fn marks both static: see bench/peers.py)."""
    from torch.nn.attention.flex_attention import flex_attention
    cfg = torch._dynamo.config
    limit = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    with cfg.patch(**{limit: 64}):
        yield torch.compile(flex_attention, fullgraph=True)


def _last_line(error: BaseException) -> str:
    """The innermost error line of a compiler failure (inductor nests the subprocess's
    trace and ends with advice lines), e.g. "AssertionError('Ternary expression ...')"."""
    lines = [ln.strip() for ln in str(error).splitlines() if re.search(r"\w+(Error|Exception)\b", ln)]
    return (lines[-1] if lines else type(error).__name__)[:200]


def _time_flex(p, ref, attend, gpu_timer, info: dict, page_size: int | None, prefix: str):
    """Build, check and time the FlexAttention peer; its figures go into `info` under `prefix`."""
    from bench.peers import flex_decode_fn, flex_kernel_kind
    gc.collect()
    torch.cuda.empty_cache()
    fn = flex_decode_fn(p.query, p.kv_cache, p.block_tables, p.context_lens, p.scale, p.context,
                        page_size=page_size, attend=attend)
    t0 = time.perf_counter()
    info[f"{prefix}rel_error_vs_gather"] = check_close(f"FlexAttention peer ({prefix[:-1]}) vs gather+SDPA", fn(), ref)
    torch.cuda.synchronize()
    info[f"{prefix}first_call_s"] = time.perf_counter() - t0  # compilation, when the shape is new to dynamo
    info[f"{prefix}page_size"] = page_size or p.kv_cache.shape[2]
    info[f"{prefix}kernel"] = flex_kernel_kind(p.query.shape[1], p.kv_cache.shape[3])
    samples = gpu_timer(fn)
    info.update(samples.summary(prefix))
    del info[f"{prefix}samples_s"]
    return samples


@pytest.mark.gpu
@pytest.mark.parametrize("case", _cases(), ids=_case_id)
def test_paged_decode(case, benchmark, ceilings, gpu_timer, write_flush_timer, flex_attend, flashinfer_workspace,
                      bench_deadline) -> None:
    from bench.ours import decode_call
    from bench.peers import gather_sdpa_decode
    bench_deadline()
    gc.collect()
    torch.cuda.empty_cache()
    dtype, batch, context, (hq, hkv, d) = case
    seed = batch * 7919 + context
    p = decode_problem(batch, context, hq, hkv, d, DTYPES[dtype], device="cuda", seed=seed)

    def gather():
        return gather_sdpa_decode(p.query, p.kv_cache, p.block_tables, p.context_lens, p.scale, p.context,
                                  p.kv_scales, uniform=True)
    ref = gather()
    err = check_close("paged_decode vs gather+SDPA", decode_call(p, torch.empty_like(p.query), checked=True)(), ref)
    out = torch.empty_like(p.query)
    ours = gpu_timer(decode_call(p, out))
    check_close("paged_decode (as timed)", out, ref)
    ours_write_flush = write_flush_timer(decode_call(p, out))   # the same, after a dirty-L2 flush
    peer_gather = gpu_timer(gather)

    info: dict[str, object] = {"kind": "decode", "cache_dtype": dtype, "batch": batch, "context": context,
                               "num_heads": hq, "num_kv_heads": hkv, "head_dim": d, "block_size": 16,
                               "rel_error_vs_gather": err, **ceilings,
                               "fingerprint": fingerprint(kind="decode", cache_dtype=dtype, batch=batch, context=context,
                                                          shape=[hq, hkv, d], block_size=16, seed=seed)}
    peer_flex = None
    info["flex_note"] = _flex_wanted(case)
    if info["flex_note"] is None:
        try:
            peer_flex = _time_flex(p, ref, flex_attend, gpu_timer, info, FLEX_PAGE, "flex_")
        except InductorError as e:   # the peer's compiler failing is a finding about the peer, not our row
            info["flex_note"] = f"FlexAttention failed to compile at this size: {_last_line(e)}"
            print(f"\n{_case_id(case)}: {info['flex_note']}")
            gc.collect()
            torch.cuda.empty_cache()
        if peer_flex is not None and (batch, context, (hq, hkv, d)) == HEADLINE:  # also in place, block 16
            info["speedup_vs_flex_inplace"] = ratio(ours, _time_flex(p, ref, flex_attend, gpu_timer, info,
                                                                     None, "flex_inplace_"))
    info.update(peer_gather.summary("gather_"))
    del info["gather_samples_s"]
    _time_flashinfer(p, dtype, case, ours, ref, gpu_timer, flashinfer_workspace, info)

    nbytes = p.bytes_moved()
    gbps = nbytes / ours.median / 1e9
    info.update(write_flush_median_s=ours_write_flush.median,
                write_flush_pct_read_ceiling=100 * nbytes / ours_write_flush.median / 1e9
                / ceilings["ceiling_read_gbps"])
    info.update(bytes=nbytes, gbps=gbps, pct_read_ceiling=100 * gbps / ceilings["ceiling_read_gbps"],
                speedup_vs_flex=ratio(ours, peer_flex), speedup_vs_gather=ratio(ours, peer_gather))
    if dtype != "bf16":  # the byte saving should show up as time saved
        del p, out, ref
        gc.collect()
        torch.cuda.empty_cache()
        base = decode_problem(batch, context, hq, hkv, d, torch.bfloat16, device="cuda", seed=1)
        ours_bf16 = gpu_timer(decode_call(base, torch.empty_like(base.query)))
        info.update(bf16_median_s=ours_bf16.median, speedup_vs_bf16=ours_bf16.median / ours.median,
                    byte_ratio_vs_bf16=base.bytes_moved() / nbytes)
    record(benchmark, ours, info)
    extra = f"; {info['speedup_vs_bf16']:.2f}x our bf16 (bytes {info['byte_ratio_vs_bf16']:.2f}x fewer)" \
        if dtype != "bf16" else ""
    print(f"\ndecode {_case_id(case)}: {ours.median * 1e6:.1f} us, {gbps:.0f} GB/s = "
          f"{info['pct_read_ceiling']:.1f}% of read ceiling; {fmt_ratio(info['speedup_vs_flex'], 'FlexAttention')}, "
          f"{fmt_ratio(info['speedup_vs_gather'], 'gather+SDPA')}, "
          f"{fmt_ratio(info.get('speedup_vs_flashinfer'), 'FlashInfer ' + str(info.get('flashinfer_best')))}"
          f"{extra} [{ours.mode}]")
