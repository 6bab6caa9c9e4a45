"""kernels/paged_prefill.py with a plan: a repeat call (the next layer) whose tensors
have the metadata of a call the plan already launched replays that launch, skipping
the checks.

The replay must give what the full path gives (bitwise: the same launch) and the
oracle, for new tensors of the same metadata; any change of shape, stride, dtype,
alignment, scale type or `out` must miss and take the full path, which still raises
the same errors. A spy on the argument checks (`full_paths`) tells the two apart.
"""
from __future__ import annotations

import importlib

import pytest
import torch

from conformance.kernel_support import spy_full_paths
from conformance.test_kernel_paged_prefill import assert_close, build_case, fixed_batch, run_oracle
from kernels.paged_prefill import paged_prefill
from kernels.prefill_plan import LAUNCHES_PER_PLAN, plan_prefill
from kernels.prefill_route import sm90_refusal
from kernels.triton_compat import is_interpreting

PP = importlib.import_module("kernels.paged_prefill")


@pytest.fixture
def full_paths(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per paged_prefill call that ran the argument checks (the full path)."""
    return spy_full_paths(monkeypatch, PP)


def _case(kind: object = "auto"):
    on_gpu = torch.cuda.is_available()
    p = fixed_batch(64, 16, (4, 2), torch.bfloat16, kind, 15 + (600 if on_gpu else 0))
    return build_case(3, p)


def _plan(case):
    kv = case.kv
    num_blocks, _, block_size, _, head_dim = kv.kv_cache.shape
    tuning = {k: v for k, v in case.tuning.items() if v is not None}
    return plan_prefill(case.query_start_loc, kv.context_lens, kv.block_tables, case.query.shape[0], num_blocks,
                        block_size, head_dim, case.query.dtype, case.query.is_cuda, **tuning)


def _call(case, plan, query=None, out=None, scale=None, kv_cache=None):
    kv = case.kv
    return paged_prefill(case.query if query is None else query, kv.kv_cache if kv_cache is None else kv_cache,
                         kv.block_tables, case.query_start_loc, kv.context_lens,
                         case.scale if scale is None else scale, kv.kv_scales, out=out, plan=plan)


@pytest.mark.parametrize("kind", ["auto", torch.int8], ids=str)
def test_repeat_calls_replay_and_match(kind: object, full_paths: list[int]) -> None:
    """Layer after layer: new query, out and cache tensors of the same metadata replay
    the first call's launch, bitwise equal to a full-path call, close to the oracle."""
    case = _case(kind)
    plan = _plan(case)
    gen = torch.Generator().manual_seed(9)
    first = _call(case, plan, out=torch.empty_like(case.query))
    assert full_paths == [1] and len(plan.launches) == 1
    assert_close(first, run_oracle(case), torch.bfloat16)
    for layer in range(3):
        q = torch.randn(case.query.shape, generator=gen).to(case.query)
        cache = case.kv.kv_cache.clone()                      # another layer's cache: same metadata
        before = len(full_paths)
        replayed = _call(case, plan, query=q, out=torch.empty_like(q), kv_cache=cache)
        assert len(full_paths) == before, f"layer {layer} took the full path"
        full = _call(case, _plan(case), query=q, out=torch.empty_like(q), kv_cache=cache)   # a fresh plan
        assert len(full_paths) == before + 1
        assert torch.equal(replayed, full)
    # out=None replays too (a fresh output like the query, as the full path allocates)
    before = len(full_paths)
    _call(case, plan)
    _call(case, plan)
    assert len(full_paths) == before + 1 and len(plan.launches) == 2


def _same_result(case, plan, query, got: torch.Tensor, expected: torch.Tensor) -> None:
    """The planned result for a query of other strides or alignment: bitwise where the
    same kernel runs both calls; on an sm_90 device the Gluon kernel refuses such a query
    (its TMA reads, kernels/prefill_route.py) and the Triton kernel runs it, held to the
    oracle like the first."""
    kv = case.kv
    runs_sm90 = [sm90_refusal(q, kv.kv_cache, False, plan.config.block_m, is_interpreting()) is None
               for q in (case.query, query)]
    if runs_sm90[0] == runs_sm90[1]:
        assert torch.equal(got, expected)
    else:
        assert_close(got, run_oracle(case), torch.bfloat16)
        assert_close(expected, run_oracle(case), torch.bfloat16)


def test_changed_metadata_takes_the_full_path(full_paths: list[int]) -> None:
    """After a launch is kept, a strided query and a misaligned one each miss, run
    the checks and still give the planned result (`_same_result`); a wrong out dtype and a bool
    scale still raise; the same scale type still replays."""
    case = _case()
    plan = _plan(case)
    out = torch.empty_like(case.query)
    expected = _call(case, plan, out=out).clone()
    assert len(full_paths) == 1
    t, h, d = case.query.shape
    wide = torch.empty((t, 2 * h, d), dtype=case.query.dtype, device=case.query.device)
    wide[:, ::2] = case.query
    strided = wide[:, ::2]                                    # heads 2*d apart
    assert not strided.is_contiguous()
    _same_result(case, plan, strided, _call(case, plan, query=strided, out=torch.empty_like(case.query)), expected)
    assert len(full_paths) == 2
    flat = torch.empty(case.query.numel() + 1, dtype=case.query.dtype, device=case.query.device)
    misaligned = flat[1:].view(case.query.shape)
    misaligned.copy_(case.query)
    assert misaligned.data_ptr() % 16 != 0
    _same_result(case, plan, misaligned, _call(case, plan, query=misaligned, out=torch.empty_like(case.query)),
                 expected)
    assert len(full_paths) == 3
    assert torch.equal(_call(case, plan, out=out, scale=float(case.scale)), expected)   # same metadata: replay
    assert len(full_paths) == 3
    with pytest.raises(ValueError, match="out"):
        _call(case, plan, out=out.float())
    with pytest.raises(ValueError, match="scale"):
        _call(case, plan, out=out, scale=True)
    assert len(plan.launches) == 3


def test_kept_launches_are_bounded(full_paths: list[int]) -> None:
    """A plan keeps at most LAUNCHES_PER_PLAN launches; past that calls still run (full path)."""
    case = _case()
    plan = _plan(case)
    outs = []
    for i in range(LAUNCHES_PER_PLAN + 2):
        # each out a column slice of a wider tensor: other strides, so other metadata
        wide = torch.empty((case.query.shape[0], case.query.shape[1], case.query.shape[2] + 8 * (i + 1)),
                           dtype=case.query.dtype, device=case.query.device)
        outs.append(_call(case, plan, out=wide[..., :case.query.shape[2]]))
    assert len(plan.launches) == LAUNCHES_PER_PLAN
    assert len(full_paths) == LAUNCHES_PER_PLAN + 2
    for o in outs[1:]:
        assert torch.equal(o, outs[0])
