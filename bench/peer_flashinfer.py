"""FlashInfer as a peer of the kernel benchmarks, reading our cache tensor in place.

FlashInfer's single-tensor NHD paged cache `[num_pages, 2, page_size, Hkv, D]` is
our layout, so both kernels read the very same bytes. Its page list is CSR: an
`indptr` per sequence into a flat `indices` array, plus the fill of each
sequence's last page; `paged_indices` builds that from our block table.

Settings, as FlashInfer names them (they differ a lot, see ../shared/peers):
decode `cuda_core` (the default), `fa2` (tensor cores, its best for decode on
the H200) and `fa3` (what "auto" picks on sm90); prefill/extend `fa3` and `fa2`.
fp8 caches run with per-tensor scales of 1: FlashInfer has no per-token scales,
so its output is checked against attention over the raw fp8 values, and the
comparison with our fp8 kernel is one of time for the same cache bytes.

Not installed, or no CUDA: `unavailable_reason()` says why, and the benchmarks
record it as the peer's note (a skip with its reason, never a silent change of
what is timed).
"""
from __future__ import annotations

import importlib
import os
from typing import Callable

import torch

DECODE_SETTINGS: dict[str, dict[str, object]] = {
    "cuda_core": {"use_tensor_cores": False},
    "fa2": {"use_tensor_cores": True, "backend": "fa2"},
    "fa3": {"use_tensor_cores": True, "backend": "fa3"},
}
PREFILL_SETTINGS = ("fa3", "fa2")
# FlashInfer's recommended float workspace is 128 MiB; split-KV at B=256 wants more.
WORKSPACE_BYTES = 256 << 20


# Set by ci/gpu_suite.sh when its module builds were stopped at their cap: an unbuilt module
# would JIT-compile inside a timed benchmark (~100 s for fa3) and wait on the stopped build's lock.
SKIP_ENV = "PAGEDLM_FLASHINFER_SKIP"


def unavailable_reason() -> str | None:
    """Why the FlashInfer peer cannot run here, or None when it can."""
    if not torch.cuda.is_available():
        return "no CUDA device"
    if os.environ.get(SKIP_ENV):
        return f"skipped: {os.environ[SKIP_ENV]}"
    try:
        importlib.import_module("flashinfer")
    except Exception as exc:   # an incomplete install raises more than ImportError at import
        return f"flashinfer is not importable here ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})"
    return None


def version() -> str | None:
    try:
        return importlib.import_module("flashinfer").__version__
    except Exception:
        return None


def workspace(device: torch.device | str = "cuda") -> torch.Tensor:
    """A zeroed float workspace (FlashInfer requires zeros on first use); one per benchmark module."""
    return torch.zeros(WORKSPACE_BYTES, dtype=torch.uint8, device=device)


def paged_indices(block_tables: torch.Tensor, context_lens: torch.Tensor,
                  page_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(indptr [B+1], indices [sum pages], last_page_len [B]), int32, from our block table.

    A sequence of n tokens uses its first ceil(n / page_size) table entries, in order."""
    if block_tables.dim() != 2 or context_lens.dim() != 1 or block_tables.shape[0] != context_lens.shape[0]:
        raise ValueError(f"block_tables [B, cols] and context_lens [B] must agree, got "
                         f"{tuple(block_tables.shape)} and {tuple(context_lens.shape)}")
    lens = context_lens.long()
    if bool((lens < 1).any()):
        raise ValueError("every context length must be >= 1")
    pages = (lens + page_size - 1) // page_size
    if bool((pages > block_tables.shape[1]).any()):
        raise ValueError(f"a context needs more than the table's {block_tables.shape[1]} blocks")
    used = torch.arange(block_tables.shape[1], device=block_tables.device).unsqueeze(0) < pages.unsqueeze(1)
    indices = block_tables[used].to(torch.int32)          # row-major: each sequence's pages in order
    indptr = torch.zeros(len(lens) + 1, dtype=torch.int32, device=block_tables.device)
    indptr[1:] = pages.cumsum(0).to(torch.int32)
    last = (lens - (pages - 1) * page_size).to(torch.int32)
    return indptr, indices, last


def _env() -> None:
    """Build for this card only, with all cores (defaults FlashInfer reads at JIT time)."""
    os.environ.setdefault("FLASHINFER_CUDA_ARCH_LIST", "9.0a")
    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 8))


def decode_fn(ws: torch.Tensor, query: torch.Tensor, kv_cache: torch.Tensor, block_tables: torch.Tensor,
              context_lens: torch.Tensor, scale: float, setting: str) -> Callable[[], torch.Tensor]:
    """A no-argument FlashInfer batch decode, planned once: query [B, Hq, D] -> [B, Hq, D]."""
    if setting not in DECODE_SETTINGS:
        raise ValueError(f"decode setting {setting!r} is not one of {sorted(DECODE_SETTINGS)}")
    _env()
    import flashinfer
    page = kv_cache.shape[2]
    indptr, indices, last = paged_indices(block_tables, context_lens, page)
    wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(ws, "NHD", **DECODE_SETTINGS[setting])
    wrapper.plan(indptr, indices, last, query.shape[1], kv_cache.shape[3], kv_cache.shape[4], page,
                 q_data_type=query.dtype, kv_data_type=kv_cache.dtype, sm_scale=scale)
    out = torch.empty_like(query)

    def run() -> torch.Tensor:
        return wrapper.run(query, kv_cache, out=out)
    return run


def prefill_fn(ws: torch.Tensor, query: torch.Tensor, kv_cache: torch.Tensor, block_tables: torch.Tensor,
               query_start_loc: torch.Tensor, context_lens: torch.Tensor, scale: float,
               setting: str) -> Callable[[], torch.Tensor]:
    """A no-argument FlashInfer causal prefill/extend over the paged cache, planned once.

    As with our paged_prefill, each sequence's queries are the last tokens of its context
    (extend = a query shorter than the context); causal masks align them to its end."""
    if setting not in PREFILL_SETTINGS:
        raise ValueError(f"prefill setting {setting!r} is not one of {PREFILL_SETTINGS}")
    _env()
    import flashinfer
    page = kv_cache.shape[2]
    indptr, indices, last = paged_indices(block_tables, context_lens, page)
    wrapper = flashinfer.BatchPrefillWithPagedKVCacheWrapper(ws, "NHD", backend=setting)
    wrapper.plan(query_start_loc.to(torch.int32), indptr, indices, last, query.shape[1], kv_cache.shape[3],
                 kv_cache.shape[4], page, causal=True, sm_scale=scale, q_data_type=query.dtype,
                 kv_data_type=kv_cache.dtype)
    out = torch.empty_like(query)

    def run() -> torch.Tensor:
        return wrapper.run(query, kv_cache, out=out)
    return run


def time_settings(build: Callable[[str], Callable[[], torch.Tensor]], settings: tuple[str, ...],
                  ref: torch.Tensor, ours, timer: Callable, check: Callable, info: dict[str, object]) -> None:
    """Build, check and time FlashInfer in each setting; figures go into `info` as
    `flashinfer_<setting>_*`, `speedup_vs_flashinfer_<setting>`, and the best setting's
    as `speedup_vs_flashinfer` / `flashinfer_best`. A setting FlashInfer refuses or
    fails to build is recorded with its error (a finding about the peer, not our row);
    a wrong result raises, as for any peer."""
    info["flashinfer_version"] = version()
    reason = unavailable_reason()
    if reason is not None:
        info["flashinfer_note"] = reason
        return
    best = None
    for setting in settings:
        prefix = f"flashinfer_{setting}_"
        try:
            fn = build(setting)
            out = fn()
            torch.cuda.synchronize()
        except Exception as exc:   # unsupported config or JIT failure inside the peer
            info[f"{prefix}note"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}" if str(exc) \
                else type(exc).__name__
            continue
        info[f"{prefix}rel_error"] = check(f"FlashInfer {setting}", out, ref)
        samples = timer(fn)
        info.update(samples.summary(prefix))
        del info[f"{prefix}samples_s"]
        info[f"speedup_vs_flashinfer_{setting}"] = samples.median / ours.median
        if best is None or samples.median < best[1].median:
            best = (setting, samples)
    if best is None:
        info["flashinfer_note"] = "no FlashInfer setting ran (see flashinfer_<setting>_note)"
        return
    info["flashinfer_best"] = best[0]
    info["speedup_vs_flashinfer"] = best[1].median / ours.median
