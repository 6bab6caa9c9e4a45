"""write_kv on the GPU: 65,536 new tokens (Hkv=8, D=128) scattered into a paged
cache, bf16 and fp8; GB/s (bytes read + written) against the copy ceiling, and
against the same scatter through torch indexing (quantising with the oracle's
`quantize_rows` for fp8) as the peer.
"""
from __future__ import annotations

import gc

import pytest
import torch

from bench.dtypes import cache_dtypes
from bench.figures import check_close, fmt_ratio, ratio, record
from bench.fingerprint import fingerprint
from bench.problems import WriteProblem, write_problem
from reference.quant import is_quantized, quantize_rows

NUM_TOKENS = 65_536
DTYPES = cache_dtypes("bf16", "fp8")
# fp8 keeps 3 mantissa bits; a division rounded differently flips a few elements by one step.
FP8_BOUND = 1e-2


def torch_write(p: WriteProblem, kv_cache: torch.Tensor, kv_scales: torch.Tensor | None) -> None:
    """The peer: the same scatter with torch index_put (quantising first for fp8)."""
    block_size = kv_cache.shape[2]
    blk, off = p.slot_mapping // block_size, p.slot_mapping % block_size
    for i, rows in enumerate((p.key, p.value)):
        if is_quantized(kv_cache.dtype):
            rows, scales = quantize_rows(rows, kv_cache.dtype)
            kv_scales[blk, i, off] = scales
        if kv_cache.element_size() == 1:    # through uint8: index_put has no float8 kernel
            kv_cache.view(torch.uint8)[blk, i, off] = rows.view(torch.uint8)
        else:                               # in the cache's dtype: a uint8 view would move single bytes
            kv_cache[blk, i, off] = rows.to(kv_cache.dtype)


def _dequantized(kv_cache: torch.Tensor, kv_scales: torch.Tensor | None) -> torch.Tensor:
    if kv_scales is None:
        return kv_cache.float()
    return kv_cache.float() * kv_scales.unsqueeze(-1)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_write_kv(dtype, benchmark, ceilings, gpu_timer, bench_deadline) -> None:
    from bench.ours import write_call
    bench_deadline()
    gc.collect()
    torch.cuda.empty_cache()
    p = write_problem(NUM_TOKENS, 8, 128, DTYPES[dtype], device="cuda", seed=NUM_TOKENS)
    peer_cache = torch.zeros_like(p.kv_cache)
    peer_scales = None if p.kv_scales is None else torch.zeros_like(p.kv_scales)
    torch_write(p, peer_cache, peer_scales)
    write_call(p, checked=True)()
    bound = FP8_BOUND if dtype == "fp8" else 0.0
    err = check_close("write_kv vs torch scatter", _dequantized(p.kv_cache, p.kv_scales),
                      _dequantized(peer_cache, peer_scales), bound)
    ours = gpu_timer(write_call(p))
    peer = gpu_timer(lambda: torch_write(p, peer_cache, peer_scales))

    nbytes = p.bytes_moved()
    gbps = nbytes / ours.median / 1e9
    info = {"kind": "write", "cache_dtype": dtype, "num_tokens": NUM_TOKENS, "num_kv_heads": 8, "head_dim": 128,
            "block_size": 16, "rel_error_vs_torch": err, **ceilings, **peer.summary("torch_"),
            "bytes": nbytes, "gbps": gbps, "pct_copy_ceiling": 100 * gbps / ceilings["ceiling_copy_gbps"],
            "speedup_vs_torch": ratio(ours, peer),
            "fingerprint": fingerprint(kind="write", cache_dtype=dtype, num_tokens=NUM_TOKENS, shape=[8, 128],
                                       block_size=16, seed=NUM_TOKENS)}
    del info["torch_samples_s"]
    record(benchmark, ours, info)
    print(f"\nwrite_kv {dtype} T={NUM_TOKENS}: {ours.median * 1e6:.1f} us, {gbps:.0f} GB/s = "
          f"{info['pct_copy_ceiling']:.1f}% of copy ceiling; {fmt_ratio(info['speedup_vs_torch'], 'torch scatter')}"
          f" [{ours.mode}]")
