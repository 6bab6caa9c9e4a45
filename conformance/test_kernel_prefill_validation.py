"""paged_prefill rejects bad arguments before launch with a ValueError naming the problem,
and handles the empty cases (no tokens, no sequences, query_len 0) without launching."""
from __future__ import annotations

import pytest
import torch

from kernels.paged_prefill import paged_prefill
from kernels.prefill_config import PrefillConfig, prefill_config
from kernels.prefill_plan import plan_prefill

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def good_args() -> dict:
    """Two sequences: 3 new tokens over a 5-token prefix, and one decode token over 4."""
    gen = torch.Generator().manual_seed(0)
    return dict(
        query=torch.randn((4, 4, 64), generator=gen).to(DEVICE),
        kv_cache=torch.randn((6, 2, 4, 2, 64), generator=gen).to(DEVICE),
        block_tables=torch.tensor([[0, 1], [2, 3]], dtype=torch.int32, device=DEVICE),
        query_start_loc=torch.tensor([0, 3, 4], dtype=torch.int32, device=DEVICE),
        context_lens=torch.tensor([8, 5], dtype=torch.int32, device=DEVICE),
        scale=0.125,
    )


def _with(**changes: object) -> dict:
    args = good_args()
    args.update(changes)
    return args


def _int8_cache() -> torch.Tensor:
    return torch.zeros((6, 2, 4, 2, 64), dtype=torch.int8, device=DEVICE)


BAD = [
    ("query not a tensor", lambda: _with(query=[1.0]), "query must be a torch.Tensor"),
    ("query int", lambda: _with(query=torch.zeros((4, 4, 64), dtype=torch.int32, device=DEVICE)), "query dtype"),
    ("query 2-D", lambda: _with(query=torch.zeros((4, 64), device=DEVICE)), "query must have 3 dims"),
    ("cache 4-D", lambda: _with(kv_cache=torch.zeros((6, 2, 4, 128), device=DEVICE)), "kv_cache must have 5 dims"),
    ("cache dim1", lambda: _with(kv_cache=torch.zeros((6, 3, 4, 2, 64), device=DEVICE)), "kv_cache dim 1 must be 2"),
    ("head_dim mismatch", lambda: _with(kv_cache=torch.zeros((6, 2, 4, 2, 80), device=DEVICE)), "head_dim"),
    ("heads", lambda: _with(kv_cache=torch.zeros((6, 2, 4, 3, 64), device=DEVICE)), "multiple of the cache's kv heads"),
    ("cache dtype", lambda: _with(kv_cache=torch.zeros((6, 2, 4, 2, 64), dtype=torch.float16, device=DEVICE)),
     "kv_cache dtype .* differs from query dtype"),
    ("missing scales", lambda: _with(kv_cache=_int8_cache()), "kv_scales is required"),
    ("scales shape", lambda: _with(kv_cache=_int8_cache(), kv_scales=torch.ones((6, 2, 4, 3), device=DEVICE)),
     "kv_scales has shape"),
    ("stray scales", lambda: _with(kv_scales=torch.ones((6, 2, 4, 2), device=DEVICE)), "only int8/float8_e4m3fn"),
    ("block size", lambda: _with(kv_cache=torch.zeros((6, 2, 6, 2, 64), device=DEVICE)), "power of two"),
    ("scale", lambda: _with(scale=0.0), "scale must be finite and > 0"),
    ("scale nan", lambda: _with(scale=float("nan")), "scale must be finite and > 0"),
    ("scale bool", lambda: _with(scale=True), "scale must be a Python float"),
    ("qsl dtype", lambda: _with(query_start_loc=torch.tensor([0, 3, 4], device=DEVICE)), "query_start_loc dtype"),
    ("qsl length", lambda: _with(query_start_loc=torch.tensor([0, 4], dtype=torch.int32, device=DEVICE)),
     "query_start_loc has 2 entries"),
    ("qsl end", lambda: _with(query_start_loc=torch.tensor([0, 3, 5], dtype=torch.int32, device=DEVICE)),
     "from 0 to the 4 query tokens"),
    ("qsl order", lambda: _with(query_start_loc=torch.tensor([0, 5, 4], dtype=torch.int32, device=DEVICE),
                                query=torch.zeros((4, 4, 64), device=DEVICE)), "non-decreasing"),
    ("query longer than context", lambda: _with(context_lens=torch.tensor([2, 5], dtype=torch.int32, device=DEVICE)),
     "sequence 0 has 3 query tokens but context_lens 2"),
    ("ctx dtype", lambda: _with(context_lens=torch.tensor([8, 5], device=DEVICE)), "context_lens dtype"),
    ("table too short", lambda: _with(context_lens=torch.tensor([9, 5], dtype=torch.int32, device=DEVICE)),
     "needs 3 blocks"),
    ("block id", lambda: _with(block_tables=torch.tensor([[0, 6], [2, 3]], dtype=torch.int32, device=DEVICE)),
     "block id 6 outside"),
    ("table rows", lambda: _with(block_tables=torch.tensor([[0, 1]], dtype=torch.int32, device=DEVICE)),
     "block_tables has 1 rows"),
    ("out shape", lambda: _with(out=torch.zeros((4, 4, 32), device=DEVICE)), "out has shape"),
    ("out dtype", lambda: _with(out=torch.zeros((4, 4, 64), dtype=torch.float16, device=DEVICE)), "out dtype"),
    ("tuning", lambda: _with(block_m=48), "block_m must be a power of two"),
    ("tuning name", lambda: _with(blockm=32), "unknown prefill tuning"),
]
# An index tensor on another device than the query: cpu vs cuda on a GPU; elsewhere the
# meta device stands in, so the CPU suite checks the same path.
OTHER = "cpu" if DEVICE == "cuda" else "meta"
BAD.append(("device", lambda: _with(context_lens=torch.tensor([8, 5], dtype=torch.int32, device=OTHER)),
            f"context_lens is on {OTHER}"))
BAD.append(("device qsl", lambda: _with(query_start_loc=torch.tensor([0, 3, 4], dtype=torch.int32, device=OTHER)),
            f"query_start_loc is on {OTHER}"))


@pytest.mark.parametrize("name, make, message", BAD, ids=[b[0] for b in BAD])
def test_rejects_bad_arguments(name: str, make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        paged_prefill(**make())


def test_plan_reuse_matches_and_checks_batch() -> None:
    args = good_args()
    plain = paged_prefill(**args)
    plan = plan_prefill(args["query_start_loc"], args["context_lens"], args["block_tables"], 4, 6, 4, 64,
                        torch.float32, on_gpu=False, block_m=16, block_n=16)
    assert torch.equal(paged_prefill(**args, plan=plan), paged_prefill(**args, block_m=16, block_n=16))
    assert torch.allclose(paged_prefill(**args, plan=plan), plain, rtol=1e-5, atol=1e-6)
    small = _with(query=args["query"][:3], query_start_loc=torch.tensor([0, 3, 3], dtype=torch.int32, device=DEVICE))
    with pytest.raises(ValueError, match="plan was built for 4 tokens"):
        paged_prefill(**small, plan=plan)
    with pytest.raises(ValueError, match="tuning overrides go to plan_prefill"):
        paged_prefill(**args, plan=plan, block_m=32)
    with pytest.raises(ValueError, match="query_start_loc has 2 entries"):
        paged_prefill(**_with(query_start_loc=args["query_start_loc"][:2]), plan=plan)
    with pytest.raises(ValueError, match="block_tables has 1 rows"):
        paged_prefill(**_with(block_tables=args["block_tables"][:1]), plan=plan)


def test_cpu_tensors_rejected_without_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compiled Triton needs CUDA: CPU tensors outside the interpreter are a device error."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    args = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in good_args().items()}
    with pytest.raises(ValueError, match="query is on cpu; paged_prefill needs a CUDA device"):
        paged_prefill(**args)


def test_tile_map_covers_every_query_tile_once() -> None:
    """The map lists (sequence, tile) for every tile exactly once, the rest idle: sequence
    by sequence (longest context first, ties in batch order), each one's tiles longest first."""
    qlens, prefixes, block_m = [0, 1, 16, 17, 40, 0, 3], [5, 0, 9, 0, 2, 0, 30], 16
    starts = torch.tensor([0] + torch.tensor(qlens).cumsum(0).tolist(), dtype=torch.int32)
    ctx = torch.tensor([q + p for q, p in zip(qlens, prefixes)], dtype=torch.int32)
    tables = torch.zeros((len(qlens), 4), dtype=torch.int32)
    plan = plan_prefill(starts, ctx, tables, sum(qlens), 1, 16, 64, torch.float16, on_gpu=True, block_m=block_m)
    seq, tile = plan.tile_map.tolist()
    live = [(s, t) for s, t in zip(seq, tile) if s >= 0]
    expected = {(i, t) for i, q in enumerate(qlens) for t in range(-(-q // block_m))}
    assert sorted(live) == sorted(expected) and len(live) == len(expected)
    assert seq[len(live):] == [-1] * (len(seq) - len(live))
    ctx_of = [q + p for q, p in zip(qlens, prefixes)]
    seq_order = [s for i, (s, _) in enumerate(live) if i == 0 or live[i - 1][0] != s]
    assert len(seq_order) == len(set(seq_order)), "a sequence's tiles are not contiguous"
    assert seq_order == sorted(seq_order, key=lambda s: (-ctx_of[s], s))
    for s in seq_order:
        work = [prefixes[s] + min((t + 1) * block_m, qlens[s]) for s2, t in live if s2 == s]
        assert work == sorted(work, reverse=True)


def test_empty_batches() -> None:
    args = good_args()
    empty_q = torch.zeros((0, 4, 64), device=DEVICE)
    out = paged_prefill(**_with(query=empty_q, query_start_loc=torch.zeros(3, dtype=torch.int32, device=DEVICE)))
    assert out.shape == (0, 4, 64)
    out = paged_prefill(**_with(query=empty_q, query_start_loc=torch.zeros(1, dtype=torch.int32, device=DEVICE),
                                context_lens=args["context_lens"][:0], block_tables=args["block_tables"][:0]))
    assert out.shape == (0, 4, 64)


def test_config_heuristic() -> None:
    """The documented GPU defaults, the deep pipeline on long contexts, the small-query
    shrink and the interpreter tiles."""
    def tiles(cfg: PrefillConfig) -> tuple[int, int, int, int]:
        return cfg.block_m, cfg.block_n, cfg.num_warps, cfg.num_stages
    assert tiles(prefill_config(128, torch.bfloat16, on_gpu=True)) == (128, 128, 8, 3)
    assert tiles(prefill_config(128, torch.bfloat16, on_gpu=True, max_context_len=2047)) == (128, 128, 8, 3)
    assert tiles(prefill_config(128, torch.bfloat16, on_gpu=True, max_context_len=2048)) == (128, 128, 8, 5)
    assert tiles(prefill_config(64, torch.bfloat16, on_gpu=True)) == (128, 64, 8, 5)
    assert tiles(prefill_config(256, torch.bfloat16, on_gpu=True)) == (128, 64, 8, 2)
    assert prefill_config(128, torch.bfloat16, on_gpu=True, max_query_len=1).block_m == 16
    assert prefill_config(128, torch.bfloat16, on_gpu=True, max_query_len=40).block_m == 64
    assert prefill_config(64, torch.float32, on_gpu=False).block_m == 32


@pytest.mark.parametrize("qlens,early", [
    ([200, 300], True),     # every possible longest query (250..500) gives the same block_m (CPU and GPU)
    ([1, 20], False),       # the longest is 11..21 by the sizes: the checks decide
    ([1] * 8, True),        # decode rows: 1..8, block_m 16 either way
])
def test_checked_plan_maps_before_its_sync_when_the_sizes_decide(monkeypatch, qlens: list[int], early: bool) -> None:
    """plan_prefill builds the tile map before the index checks' sync when the sizes
    alone fix its block_m (then never again), else after the checks; either way the
    map is the one built after checking, and a batch the checks refuse still raises."""
    import kernels.prefill_plan as prefill_plan
    from kernels.tile_map import build_tile_map, maps_on_device
    events = []
    real_map, real_check = prefill_plan.build_tile_map, prefill_plan.check_indices
    monkeypatch.setattr(prefill_plan, "build_tile_map", lambda *a: events.append(("map", a[3])) or real_map(*a))
    monkeypatch.setattr(prefill_plan, "check_indices", lambda *a: events.append(("check",)) or real_check(*a))
    starts = [0]
    for q in qlens:
        starts.append(starts[-1] + q)
    qsl = torch.tensor(starts, dtype=torch.int32, device=DEVICE)
    lens = torch.tensor([q + 3 for q in qlens], dtype=torch.int32, device=DEVICE)
    tables = torch.arange(len(qlens) * 24, dtype=torch.int32, device=DEVICE).view(len(qlens), 24)
    on_gpu = DEVICE == "cuda"
    plan = plan_prefill(qsl, lens, tables, starts[-1], 64 * 24, 16, 64, torch.bfloat16, on_gpu)
    block_m = plan.config.block_m
    mapped_early = early and maps_on_device(lens)
    assert events == ([("map", block_m), ("check",)] if mapped_early else [("check",), ("map", block_m)])
    assert torch.equal(plan.tile_map.cpu(), build_tile_map(qsl, lens, starts[-1], block_m).cpu())
    events.clear()
    with pytest.raises(ValueError, match="the queries must be the last tokens of the context"):
        plan_prefill(qsl, lens - 4, tables, starts[-1], 64 * 24, 16, 64, torch.bfloat16, on_gpu)
    assert events[-1] == ("check",), "a map was built after a refused check"
