"""The limits every kernel figure is held to, measured in the same run.

- read: a Triton kernel that streams a 4 GiB buffer and writes one float per
  16 KiB tile (1/4096 of what it reads) - the limit of a decode step, which reads
  the KV cache once and writes almost nothing;
- copy: torch `copy_` of 2 GiB, bytes read plus bytes written - the limit of a
  kernel that moves data, like write_kv;
- matmul: an 8192^3 bf16 product - the compute limit of prefill.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import triton
import triton.language as tl

from bench.timing import Samples, time_gpu

READ_BYTES = 4 * 1024**3
COPY_BYTES = 2 * 1024**3
MATMUL_N = 8192
# (elements per program, warps): the best of these is the ceiling.
READ_CONFIGS = ((4096, 4), (4096, 8), (8192, 8), (16384, 16))


@triton.jit
def read_sum_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """out[pid] = sum of tile pid of x: every byte read once, one float written."""
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n, other=0.0)
    tl.store(out_ptr + pid, tl.sum(x.to(tl.float32), axis=0))


def read_sum(x: torch.Tensor, block: int = 4096, num_warps: int = 4,
             out: torch.Tensor | None = None) -> torch.Tensor:
    """Per-tile sums of a flat tensor (float32 [ceil(n / block)])."""
    if x.dim() != 1:
        raise ValueError(f"x must be 1-D, got shape {tuple(x.shape)}")
    tiles = triton.cdiv(x.numel(), block)
    if out is None:
        out = torch.empty(tiles, dtype=torch.float32, device=x.device)
    read_sum_kernel[(tiles,)](x, out, x.numel(), BLOCK=block, num_warps=num_warps)
    return out


@dataclass(frozen=True)
class Ceilings:
    read_gbps: float
    copy_gbps: float
    matmul_tflops: float
    read_config: str

    def as_info(self) -> dict[str, object]:
        return {f"ceiling_{k}": v for k, v in asdict(self).items()}


def _gbps(nbytes: int, samples: Samples) -> float:
    return nbytes / samples.median / 1e9


def _fastest_read(x: torch.Tensor, flush, **timing: object) -> tuple[float, int, str]:
    """The quickest of READ_CONFIGS reading all of `x`: (median seconds, bytes written, config)."""
    best = (float("inf"), 0, "")
    for block, warps in READ_CONFIGS:
        out = torch.empty(triton.cdiv(x.numel(), block), dtype=torch.float32, device=x.device)
        seconds = time_gpu(lambda: read_sum(x, block, warps, out), flush, **timing).median
        if seconds < best[0]:
            best = (seconds, out.numel() * 4, f"BLOCK={block},num_warps={warps}")
    return best


def measure_read(flush, device: torch.device) -> tuple[float, str]:
    x = torch.empty(READ_BYTES // 4, dtype=torch.float32, device=device).uniform_(-1, 1)
    seconds, written, cfg = _fastest_read(x, flush, reps=10, use_graph=False)
    return (READ_BYTES + written) / seconds / 1e9, cfg


def measure_read_floor(nbytes: int, flush, device: torch.device) -> tuple[float, float]:
    """What a plain streaming read achieves at one problem's size, timed like the
    kernels (CUDA graph, flushed): (seconds to read `nbytes`, best of
    READ_CONFIGS; seconds of a one-program launch that reads 16 KiB). A small
    decode's % of the read ceiling is bounded by the first, its fixed cost by
    the second."""
    x = torch.empty(max(1, nbytes // 4), dtype=torch.float32, device=device).uniform_(-1, 1)
    best, _, _ = _fastest_read(x, flush)
    one = x[:4096]
    out = torch.empty(1, dtype=torch.float32, device=device)
    launch = time_gpu(lambda: read_sum(one, 4096, 4, out), flush).median
    return best, launch


def measure_copy(flush, device: torch.device) -> float:
    src = torch.empty(COPY_BYTES // 2, dtype=torch.bfloat16, device=device).uniform_(-1, 1)
    dst = torch.empty_like(src)
    s = time_gpu(lambda: dst.copy_(src), flush, reps=10, use_graph=False)
    return _gbps(2 * COPY_BYTES, s)


def measure_matmul(flush, device: torch.device) -> float:
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(MATMUL_N, MATMUL_N, dtype=torch.bfloat16, device=device, generator=gen)
    b = torch.randn(MATMUL_N, MATMUL_N, dtype=torch.bfloat16, device=device, generator=gen)
    c = torch.empty_like(a)
    s = time_gpu(lambda: torch.mm(a, b, out=c), flush, reps=10, use_graph=False)
    return 2 * MATMUL_N**3 / s.median / 1e12


def measure_ceilings(flush, device: torch.device | str = "cuda") -> Ceilings:
    """All three ceilings; frees its buffers before returning."""
    device = torch.device(device)
    read, cfg = measure_read(flush, device)
    copy = measure_copy(flush, device)
    tflops = measure_matmul(flush, device)
    torch.cuda.empty_cache()
    return Ceilings(read_gbps=read, copy_gbps=copy, matmul_tflops=tflops, read_config=cfg)
