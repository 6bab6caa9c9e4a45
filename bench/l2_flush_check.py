"""How the L2 flush between timed runs changes decode timings (the method check
behind bench/timing.py's read flush).

    python3 -m bench.l2_flush_check

Times a 1 GiB read and four decode problems three ways: after a 256 MiB write
flush (dirty lines left in the L2), after a 256 MiB read flush (clean lines),
and with no flush. If the write flush costs a small problem a constant that the
read flush and no flush do not, the difference is the write-back, not the
kernel. Needs a CUDA device (~30 s on an H100).
"""
from __future__ import annotations

import sys

import torch

PROBLEMS = ((8, 4096, torch.bfloat16), (64, 512, torch.bfloat16), (64, 4096, torch.bfloat16),
            (64, 4096, torch.float8_e4m3fn))


def _read_figures(flushes: tuple) -> None:
    from bench.ceilings import read_sum
    from bench.timing import time_gpu
    x = torch.empty(1024**3 // 4, dtype=torch.float32, device="cuda").uniform_()
    sums = torch.empty((x.numel() + 4095) // 4096, dtype=torch.float32, device="cuda")
    for name, flush in flushes:
        s = time_gpu(lambda: read_sum(x, 4096, 4, sums), flush, reps=20, use_graph=False)
        print(f"read 1 GiB, {name}: {s.median * 1e6:.1f} us = {x.numel() * 4 / s.median / 1e9:.0f} GB/s")


def _decode_figures(flushes: tuple, batch: int, context: int, dtype: torch.dtype) -> None:
    import kernels
    from bench.problems import decode_problem
    from bench.timing import time_gpu
    p = decode_problem(batch, context, 32, 8, 128, dtype, device="cuda")
    out = torch.empty_like(p.query)

    def run() -> None:
        kernels.paged_decode(p.query, p.kv_cache, p.block_tables, p.context_lens, p.scale, p.kv_scales, out,
                             check_indices=False, max_context_len=context)
    figures = []
    for name, flush in flushes:
        s = time_gpu(run, flush)
        figures.append(f"{name} {s.median * 1e6:.1f} us ({p.bytes_moved() / s.median / 1e9:.0f} GB/s)")
    print(f"decode B={batch} L={context} 32/8/128 {dtype}: " + "; ".join(figures))


def main() -> int:
    if not torch.cuda.is_available():
        print("l2_flush_check: needs a CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    from bench.timing import L2Flush
    flushes = (("write flush", L2Flush("cuda", mode="write")), ("read flush", L2Flush("cuda", mode="read")),
               ("no flush", None))
    _read_figures(flushes)
    torch.cuda.empty_cache()
    for problem in PROBLEMS:
        _decode_figures(flushes, *problem)
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
