"""paged_decode's two split-K merges: fused (the last split program of each
sequence and KV head merges, found by an atomic ticket) and a separate reduce
kernel. Both must match the oracle and each other; the fused merge must leave
its ticket counters at zero, so a reused workspace keeps working, and must not
depend on which program arrives last."""
from __future__ import annotations

import pytest
import torch

from conformance.kernel_support import (assert_close, assert_guard_intact, oracle_decode, poisoned_like, size_plan,
                                        tolerance)
from conformance.paged_cases import rel_error
from conformance.test_kernel_paged_decode import make_case
from kernels import DecodeWorkspace, paged_decode

PLAN = size_plan()


def _decode(case, split_reduce: str, num_splits: int, workspace: DecodeWorkspace | None = None) -> torch.Tensor:
    out = poisoned_like(case.query)
    kv = case.kv
    paged_decode(case.query, kv.kv_cache, kv.block_tables, kv.context_lens, case.scale, kv.kv_scales, out=out,
                 num_splits=num_splits, split_reduce=split_reduce, workspace=workspace)
    assert_guard_intact(out, f"{split_reduce} {num_splits=}")
    return out


@pytest.mark.parametrize("kind", ["auto", "fp8"])
def test_fused_and_kernel_merges_agree(kind: str) -> None:
    """Splits 2, 5 and more splits than the longest context (empty splits, and a
    zero-length sequence whose merge writes zeros) through both merges."""
    long = 40 if PLAN.device == "cpu" else PLAN.long_context
    case = make_case(31, [long, 0, 9, long // 2], 16, 64, 8, 2, torch.bfloat16, kind)
    ref = oracle_decode(case.query, case.kv, case.scale)
    tol = tolerance(torch.bfloat16)
    for splits in (2, 5, long + 3):
        fused, kernel = _decode(case, "fused", splits), _decode(case, "kernel", splits)
        assert_close(fused, ref, tol, f"fused {splits=}")
        assert_close(kernel, ref, tol, f"kernel {splits=}")
        assert rel_error(fused, kernel) <= tol.rel, f"{splits=}: the two merges disagree"
        assert torch.equal(fused[1].float().cpu(), torch.zeros_like(fused[1].float().cpu()))


def test_fused_merge_resets_its_tickets() -> None:
    """After each call every ticket counter of the workspace is back at zero; calls
    of another shape on the same workspace (fewer sequences, more splits) stay correct."""
    ws = DecodeWorkspace()
    tol = tolerance(torch.bfloat16)
    for seed, ctx, splits in ((1, [33, 20, 7], 3), (2, [50], 4), (3, [12, 40, 40, 1], 2)):
        case = make_case(seed, ctx, 16, 64, 4, 2, torch.bfloat16, "auto")
        out = _decode(case, "fused", splits, ws)
        assert_close(out, oracle_decode(case.query, case.kv, case.scale), tol, f"{seed=}")
        tickets = ws.tickets(len(ctx) * 2, case.query.device)
        assert int(tickets.abs().sum()) == 0, f"{seed=}: tickets left at {tickets.tolist()}"


def test_fused_merge_does_not_depend_on_arrival_order() -> None:
    """Repeated calls give bitwise the same output (on a GPU the last program to
    arrive differs from run to run; the merge reads splits in split order)."""
    long = 48 if PLAN.device == "cpu" else PLAN.long_context
    case = make_case(5, [long, long - 1, 17], 16, 64, 8, 2, torch.bfloat16, "auto")
    ws = DecodeWorkspace()
    first = _decode(case, "fused", 6, ws)
    for i in range(2 if PLAN.device == "cpu" else 20):
        assert torch.equal(_decode(case, "fused", 6, ws), first), f"call {i} differs"
