"""Argument checks shared by the launchers: each raises ValueError naming the argument."""
from __future__ import annotations

import math
from types import MappingProxyType
from typing import NamedTuple

import torch

from kernels.index_checks import NONE, read_index_facts
from kernels.launch import cdiv

KV_CACHE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.int8)
QUERY_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
QUANTIZED_DTYPES = (torch.float8_e4m3fn, torch.int8)
MIN_HEAD_DIM, MAX_HEAD_DIM = 16, 256     # the head sizes the attention kernels are tested for
_INT_OF_SIZE = MappingProxyType({1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64})


def check_tensor(name: str, t: object, ndim: int | None = None,
                 dtypes: tuple[torch.dtype, ...] | None = None,
                 device: torch.device | None = None) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise ValueError(f"{name} dtype {str(t.dtype).replace('torch.', '')} not supported (expected one of {names})")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device}, expected {device} (same device as the other arguments)")
    return t


def check_scale(scale: object) -> float:
    """The softmax scale: a finite positive Python number (a bool or tensor is a caller bug)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise ValueError(f"scale must be a Python float, got {type(scale).__name__}")
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be finite and > 0, got {scale}")
    return float(scale)


def check_device_runs_triton(name: str, t: torch.Tensor, launcher: str, interpreting: bool) -> None:
    """Compiled Triton needs CUDA tensors; CPU tensors only work under TRITON_INTERPRET=1."""
    if t.device.type != "cuda" and not interpreting:
        raise ValueError(f"{name} is on {t.device}; {launcher} needs a CUDA device (or TRITON_INTERPRET=1)")


def check_shape(name: str, t: torch.Tensor, expected: tuple[int, ...]) -> None:
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(expected)}")


def check_kv_cache(name: str, kv_cache: object, device: torch.device | None = None) -> torch.Tensor:
    """[num_blocks, 2, block_size, num_kv_heads, head_dim]; the last dim contiguous."""
    kv_cache = check_tensor(name, kv_cache, 5, KV_CACHE_DTYPES, device)
    if kv_cache.shape[1] != 2:
        raise ValueError(f"{name} dim 1 must be 2 (K, V), got shape {tuple(kv_cache.shape)}")
    if kv_cache.stride(-1) != 1:
        raise ValueError(f"{name} must be contiguous in head_dim (stride(-1) == 1)")
    return kv_cache


def check_kv_scales(kv_scales: object, kv_cache: torch.Tensor) -> torch.Tensor | None:
    """Scales exist exactly when the cache is quantised: float32 [num_blocks, 2, block_size, num_kv_heads]."""
    quantized = kv_cache.dtype in QUANTIZED_DTYPES
    if not quantized:
        if kv_scales is not None:
            raise ValueError(f"kv_scales given for a {kv_cache.dtype} cache; only int8/float8_e4m3fn caches take scales")
        return None
    if kv_scales is None:
        raise ValueError(f"kv_scales is required for a {kv_cache.dtype} cache")
    kv_scales = check_tensor("kv_scales", kv_scales, 4, (torch.float32,), kv_cache.device)
    check_shape("kv_scales", kv_scales, tuple(kv_cache.shape[:4]))
    return kv_scales


def check_heads(num_heads: int, num_kv_heads: int) -> None:
    if num_heads % num_kv_heads:
        raise ValueError(f"query heads ({num_heads}) must be a multiple of the cache's kv heads ({num_kv_heads})")


class AttentionShape(NamedTuple):
    num_heads: int
    head_dim: int
    num_blocks: int
    block_size: int
    num_kv_heads: int
    quantized: bool


def check_attention(launcher: str, query: object, kv_cache: object, kv_scales: object, out: object,
                    interpreting: bool) -> AttentionShape:
    """The checks `paged_decode` and `paged_prefill` share: query [tokens, Hq, D] and
    `out` like it, the cache and its scales, the head and block limits both kernels
    are tested for (head_dim MIN_HEAD_DIM..MAX_HEAD_DIM, a power-of-two block size),
    and a device the kernels can run on."""
    query = check_tensor("query", query, 3, QUERY_DTYPES)
    device = query.device
    kv_cache = check_kv_cache("kv_cache", kv_cache, device)
    _, num_heads, head_dim = query.shape
    num_blocks, _, block_size, num_kv_heads, cache_head_dim = kv_cache.shape
    if cache_head_dim != head_dim:
        raise ValueError(f"kv_cache head_dim {cache_head_dim} differs from query head_dim {head_dim}")
    if not MIN_HEAD_DIM <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"head_dim {head_dim} not supported ({MIN_HEAD_DIM}..{MAX_HEAD_DIM})")
    if block_size < 1 or block_size & (block_size - 1):
        raise ValueError(f"kv_cache block_size {block_size} not supported (a power of two)")
    if query.stride(-1) != 1:
        raise ValueError("query must be contiguous in head_dim (stride(-1) == 1)")
    quantized = kv_cache.dtype in QUANTIZED_DTYPES
    if not quantized and kv_cache.dtype != query.dtype:
        raise ValueError(f"kv_cache dtype {kv_cache.dtype} differs from query dtype {query.dtype} (an unquantised "
                         "cache holds the model dtype; int8/float8_e4m3fn caches take kv_scales)")
    check_heads(num_heads, num_kv_heads)
    check_kv_scales(kv_scales, kv_cache)
    if out is not None:
        check_tensor("out", out, 3, (query.dtype,), device)
        check_shape("out", out, tuple(query.shape))
        if out.stride(-1) != 1:
            raise ValueError("out must be contiguous in head_dim (stride(-1) == 1)")
    check_device_runs_triton("query", query, launcher, interpreting)
    return AttentionShape(num_heads, head_dim, num_blocks, block_size, num_kv_heads, quantized)


def check_index_tensors(block_tables: object, context_lens: object, num_seqs: int | None,
                        device: torch.device) -> int:
    """int32 context_lens [num_seqs] and block_tables [num_seqs, max_blocks] (columns
    contiguous) on `device`; `num_seqs` None takes context_lens's length. Returns num_seqs.
    Their contents are `check_indices`'s job."""
    context_lens = check_tensor("context_lens", context_lens, 1, (torch.int32,), device)
    if num_seqs is None:
        num_seqs = context_lens.shape[0]
    else:
        check_shape("context_lens", context_lens, (num_seqs,))
    block_tables = check_tensor("block_tables", block_tables, 2, (torch.int32,), device)
    if block_tables.shape[0] != num_seqs:
        raise ValueError(f"block_tables has {block_tables.shape[0]} rows, expected {num_seqs} (one per sequence)")
    if block_tables.stride(1) != 1:
        raise ValueError("block_tables must be contiguous along its columns (stride(1) == 1)")
    return num_seqs


def check_query_start_loc(query_start_loc: object, num_seqs: int, device: torch.device) -> torch.Tensor:
    """int32 [num_seqs + 1] on `device` (its contents: `check_indices`)."""
    query_start_loc = check_tensor("query_start_loc", query_start_loc, 1, (torch.int32,), device)
    if query_start_loc.shape[0] != num_seqs + 1:
        raise ValueError(f"query_start_loc has {query_start_loc.shape[0]} entries, expected "
                         f"num_seqs + 1 = {num_seqs + 1} (context_lens has {num_seqs})")
    return query_start_loc


class IndexFacts(NamedTuple):
    longest: int                       # the longest context
    max_query_len: int                 # prefill only (0 otherwise)


def check_indices(block_tables: torch.Tensor, context_lens: torch.Tensor, num_blocks: int, block_size: int,
                  query_start_loc: torch.Tensor | None = None, num_tokens: int = 0) -> IndexFacts:
    """The range checks behind a checked launch (tensors already passed
    `check_index_tensors`): every block a sequence uses lies in the cache and the
    table is wide enough; with `query_start_loc`, a prefix sum from 0 to
    `num_tokens` whose queries fit in their contexts. One device sync
    (kernels/index_checks.py); only an error costs a second read, to name the value."""
    num_seqs, num_cols = block_tables.shape
    if num_seqs == 0:
        if query_start_loc is not None:
            only = int(query_start_loc[0])
            _check_ends(only, only, num_tokens)
        return IndexFacts(0, 0)
    facts = read_index_facts(block_tables, context_lens, num_blocks, block_size, query_start_loc)
    shortest, longest, bad, first, last, unordered, too_long, max_query_len = facts
    if shortest < 0:
        raise ValueError(f"context_lens must be >= 0, got {shortest}")
    if query_start_loc is not None:
        _check_ends(first, last, num_tokens)
        if unordered != NONE:
            start, end = query_start_loc[unordered:unordered + 2].tolist()
            raise ValueError(f"query_start_loc must be non-decreasing: sequence {unordered} runs from "
                             f"{start} to {end}")
        if too_long != NONE:
            start, end = query_start_loc[too_long:too_long + 2].tolist()
            raise ValueError(f"sequence {too_long} has {end - start} query tokens but context_lens "
                             f"{int(context_lens[too_long])}: the queries must be the last tokens of the context")
    need = cdiv(longest, block_size)
    if need > num_cols:
        raise ValueError(f"a context of {longest} tokens needs {need} blocks "
                         f"but block_tables has only {num_cols} columns")
    if bad != NONE:
        row, col = divmod(bad, num_cols)
        raise ValueError(f"block_tables holds block id {int(block_tables[row, col])} outside the cache's "
                         f"{num_blocks} blocks")
    return IndexFacts(longest, max_query_len if query_start_loc is not None else 0)


def _check_ends(first: int, last: int, num_tokens: int) -> None:
    if first != 0 or last != num_tokens:
        raise ValueError(f"query_start_loc must run from 0 to the {num_tokens} query tokens, got {first} .. {last}")


def check_block_mapping(name: str, mapping: object, num_src: int, num_dst: int, src: str, dst: str,
                        disjoint: bool) -> torch.Tensor:
    """int64 [n, 2] of (source block, destination block), each inside its tensor's
    blocks, no destination twice, and with `disjoint` no destination that is also a
    source (copies inside one cache are then order-free). Returns the host copy."""
    if not isinstance(mapping, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(mapping).__name__}")
    if mapping.dtype != torch.int64 or mapping.dim() != 2 or mapping.shape[1] != 2:
        raise ValueError(f"{name} must be int64 [n, 2], got {mapping.dtype} {tuple(mapping.shape)}")
    pairs = mapping.cpu()
    if pairs.shape[0] == 0:
        return pairs
    for col, what, limit, owner in ((0, "source", num_src, src), (1, "destination", num_dst, dst)):
        ids = pairs[:, col]
        outside = (ids < 0) | (ids >= limit)
        if bool(outside.any()):
            raise ValueError(f"{name} {what} block {int(ids[outside][0])} outside the {limit} blocks of {owner}")
    dsts = pairs[:, 1]
    ordered = dsts.sort().values
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    if repeated.numel():
        raise ValueError(f"{name} names destination block {int(repeated[0])} twice")
    if disjoint:
        both = dsts[torch.isin(dsts, pairs[:, 0])]
        if both.numel():
            raise ValueError(f"{name}: destination block {int(both[0])} is also a source in this call")
    return pairs


def bit_copy_dtype(name: str, t: torch.Tensor) -> torch.dtype:
    """The integer dtype of `t`'s element size, through which a bitwise copy moves
    it (NaN payloads and fp8 codes unchanged); ValueError naming `name` if none."""
    if t.element_size() not in _INT_OF_SIZE or t.is_complex():
        raise ValueError(f"{name} dtype {t.dtype} not supported")
    return _INT_OF_SIZE[t.element_size()]
