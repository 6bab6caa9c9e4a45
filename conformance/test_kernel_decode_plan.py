"""kernels/decode_plan.py: a repeat unchecked paged_decode call on a workspace runs
the plan its first call left there, skipping the checks.

The plan must give what the full path gives (bitwise: the same launches) and the
oracle, for new tensors of the same metadata; any change of shape, stride,
dtype, device, alignment or keyword must miss and take the full path, which
still raises the same errors; and plans stay with the workspace that made them.
A spy on the argument checks (`full_paths`) tells the two paths apart.
"""
from __future__ import annotations

import importlib

import pytest
import torch

from conformance.kernel_support import assert_close, oracle_decode, poisoned_like, size_plan, spy_full_paths, tolerance
from conformance.paged_cases import PagedKV
from conformance.test_kernel_paged_decode import Case, make_case
from conformance.test_kernel_validation import SHARED_BAD, attention_args
from kernels import DecodeWorkspace, paged_decode
from kernels.call_key import call_key
from kernels.decode_plan import DecodePlans

PD = importlib.import_module("kernels.paged_decode")      # the module (kernels.paged_decode is the function)
PLAN = size_plan()
CTX = [40, 0, 9, 23]
TOL = tolerance(torch.bfloat16)


@pytest.fixture
def full_paths(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per paged_decode call that ran the argument checks (the full path)."""
    return spy_full_paths(monkeypatch, PD)


def _unchecked(case: Case, workspace: DecodeWorkspace | None, out: torch.Tensor | None = None,
               query: torch.Tensor | None = None, **kw: object) -> torch.Tensor:
    kv = case.kv
    return paged_decode(case.query if query is None else query, kv.kv_cache, kv.block_tables, kv.context_lens,
                        case.scale, kv.kv_scales, out, check_indices=False,
                        max_context_len=max(kv.context_lens.tolist()), workspace=workspace, **kw)


def _key(case: Case, out: torch.Tensor | None, query: torch.Tensor | None = None, **options: object) -> tuple:
    kv = case.kv
    opts = dict(scale=case.scale, max_context_len=40, num_splits=None, block_n=None, num_warps=None,
                num_stages=None, pdl=None, split_reduce=None, kernel="auto", interpreting=False) | options
    return call_key((case.query if query is None else query, kv.kv_cache, kv.block_tables, kv.context_lens,
                     kv.kv_scales, out), tuple(opts.values()))


REPEATS = {
    "fused split-K": ("auto", {}),
    "reduce kernel": ("auto", {"split_reduce": "kernel"}),
    "no split": ("auto", {"num_splits": 1}),
    "fp8 cache": ("fp8", {}),
}


@pytest.mark.parametrize("name", list(REPEATS))
@pytest.mark.parametrize("give_out", [True, False], ids=["out", "no out"])
def test_repeat_call_matches_the_full_path_and_the_oracle(name: str, give_out: bool, full_paths: list[int]) -> None:
    """The second call site's tensors (another layer: new cache, tables, query and
    out, same metadata) run the first one's plan: no checks, the full path's
    output bit for bit, and the oracle's within tolerance."""
    kind, kw = REPEATS[name]
    first, second = (make_case(seed, CTX, 16, 64, 8, 2, torch.bfloat16, kind) for seed in (11, 12))
    outs = [poisoned_like(c.query) if give_out else None for c in (first, second)]
    assert _key(first, outs[0]) == _key(second, outs[1])            # same metadata, other tensors
    ws = DecodeWorkspace()
    _unchecked(first, ws, outs[0], **kw)
    assert (len(full_paths), len(ws.plans)) == (1, 1)
    fast = _unchecked(second, ws, outs[1], **kw)
    assert len(full_paths) == 1, "the repeat call ran the checks"
    assert fast is outs[1] or not give_out, "the plan wrote somewhere else than out="
    full = _unchecked(second, None, poisoned_like(second.query) if give_out else None, **kw)
    assert torch.equal(fast.view(torch.uint8), full.view(torch.uint8)), f"{name}: plan and full path differ"
    assert_close(fast, oracle_decode(second.query, second.kv, second.scale), TOL, name)


def test_key_covers_what_the_checks_read() -> None:
    """Equal metadata, equal keys; each change a check could see gives another key."""
    case = make_case(3, CTX, 16, 64, 8, 2, torch.bfloat16, "auto")
    out = torch.empty_like(case.query)
    base = _key(case, out)
    q = case.query
    wide = torch.zeros((q.shape[0], q.shape[1], 80), dtype=q.dtype, device=q.device)[..., :64]
    odd = torch.zeros(q.numel() + 1, dtype=q.dtype, device=q.device)[1:].view(q.shape)   # 2-byte offset
    assert _key(case, torch.empty_like(out), query=q.clone()) == base
    changed = {
        "shape": _key(case, out, query=q[:3]), "stride": _key(case, out, query=wide.copy_(q)),
        "dtype": _key(case, out, query=q.half()), "device": _key(case, out, query=q.to("meta")),
        "alignment": _key(case, out, query=odd.copy_(q)), "no out": _key(case, None),
        "out stride": _key(case, wide), "scale": _key(case, out, scale=0.1),
        "context": _key(case, out, max_context_len=41), "splits": _key(case, out, num_splits=2),
        "merge": _key(case, out, split_reduce="kernel"), "pdl": _key(case, out, pdl=False),
        "interpreter": _key(case, out, interpreting=True),
        # 1 == 1.0 == True: the full path tells them apart, so must the key
        "int scale": _key(case, out, scale=1), "float scale": _key(case, out, scale=1.0),
        "bool scale": _key(case, out, scale=True), "bool splits": _key(case, out, num_splits=True),
        "int splits": _key(case, out, num_splits=1),
    }
    keys = [base, *changed.values()]
    assert len(set(keys)) == len(keys), [n for n, k in changed.items() if keys.count(k) > 1]
    assert call_key((q.tolist(), case.kv.kv_cache, case.kv.block_tables, case.kv.context_lens, None, out), ()) is None
    assert call_key((q.to_sparse(), case.kv.kv_cache, case.kv.block_tables, case.kv.context_lens, None, out),
                    ()) is None


def test_changed_metadata_takes_the_full_path(full_paths: list[int]) -> None:
    """After a plan exists, a strided query, a misaligned one and other keywords each
    miss, run the checks, plan for themselves and still match the oracle."""
    case = make_case(5, CTX, 16, 64, 8, 2, torch.bfloat16, "auto")
    ref = oracle_decode(case.query, case.kv, case.scale)
    ws = DecodeWorkspace()
    _unchecked(case, ws)
    q = case.query
    wide = torch.zeros((q.shape[0], q.shape[1], 80), dtype=q.dtype, device=q.device)[..., :64].copy_(q)
    odd = torch.zeros(q.numel() + 1, dtype=q.dtype, device=q.device)[1:].view(q.shape).copy_(q)
    for i, (what, query, kw) in enumerate([("strided", wide, {}), ("misaligned", odd, {}),
                                           ("3 splits", q, {"num_splits": 3})], start=2):
        assert_close(_unchecked(case, ws, query=query, **kw), ref, TOL, what)
        assert (len(full_paths), len(ws.plans)) == (i, i), what


UNCHECKED_BAD = [b for b in SHARED_BAD if not b[1] and b[0] not in
                 ("table too narrow", "block id too big", "block id negative", "negative context")]
BAD_KEYWORDS = [
    ("max_context_len bool", {"max_context_len": True}, "max_context_len must be a Python int >= 0, got True"),
    ("max_context_len negative", {"max_context_len": -1}, "max_context_len must be a Python int >= 0"),
    ("no splits", {"num_splits": 0}, "num_splits must be in 1"),
    ("block_n", {"block_n": 24}, "block_n must be a power of two"),
    ("merge", {"split_reduce": "tree"}, "split_reduce must be one of"),
    ("fused with pdl", {"split_reduce": "fused", "pdl": True}, "pdl=True launches the separate split-K reduce"),
]


@pytest.fixture(scope="module")
def warmed() -> tuple[dict, DecodeWorkspace]:
    """attention_args' valid decode call, planned on a workspace without and with `out`."""
    args = attention_args("paged_decode") | dict(check_indices=False, max_context_len=17)
    ws = DecodeWorkspace()
    paged_decode(**args, workspace=ws)
    paged_decode(**args, out=torch.empty_like(args["query"]), workspace=ws)
    assert len(ws.plans) == 2
    return args, ws


def _same_error(args: dict, ws: DecodeWorkspace, match: str) -> None:
    with pytest.raises(ValueError, match=match) as fresh:
        paged_decode(**args)
    with pytest.raises(ValueError, match=match) as planned:
        paged_decode(**args, workspace=ws)
    assert str(planned.value) == str(fresh.value)
    assert len(ws.plans) == 2, "bad input left a plan"


@pytest.mark.parametrize("name,case,change,match", UNCHECKED_BAD, ids=[b[0] for b in UNCHECKED_BAD])
def test_bad_input_after_a_plan_raises_as_before(name: str, case: dict, change, match: str,
                                                 warmed: tuple[dict, DecodeWorkspace]) -> None:
    args, ws = warmed
    args = dict(args, out=torch.empty_like(args["query"]))
    change(args)
    _same_error(args, ws, match)


@pytest.mark.parametrize("name,kw,match", BAD_KEYWORDS, ids=[b[0] for b in BAD_KEYWORDS])
def test_bad_keywords_after_a_plan_raise_as_before(name: str, kw: dict, match: str,
                                                   warmed: tuple[dict, DecodeWorkspace]) -> None:
    args, ws = warmed
    _same_error(args | kw, ws, match)


@pytest.mark.skipif(PLAN.device != "cpu", reason="CPU tensors: the interpreter's device check")
def test_interpreter_turned_off_is_a_miss(monkeypatch: pytest.MonkeyPatch,
                                          warmed: tuple[dict, DecodeWorkspace]) -> None:
    """A plan made under the interpreter does not let CPU tensors through without it."""
    args, ws = warmed
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    _same_error(args, ws, "needs a CUDA device")


def test_plans_stay_with_their_call_site(full_paths: list[int]) -> None:
    """Two call sites of different shapes on one workspace keep a plan each and
    alternate correctly; another workspace starts empty; checked calls and calls
    without max_context_len never plan."""
    a = make_case(7, CTX, 16, 64, 8, 2, torch.bfloat16, "auto")
    b = make_case(8, [17, 30], 8, 64, 4, 1, torch.bfloat16, "auto")
    ws, other = DecodeWorkspace(), DecodeWorkspace()
    refs = {id(c): oracle_decode(c.query, c.kv, c.scale) for c in (a, b)}
    for i, case in enumerate((a, b, a, b)):
        assert_close(_unchecked(case, ws), refs[id(case)], TOL, f"call {i}")
    assert (len(full_paths), len(ws.plans)) == (2, 2)
    assert_close(_unchecked(a, other), refs[id(a)], TOL, "other workspace")
    assert (len(full_paths), len(other.plans), len(ws.plans)) == (3, 1, 2)
    kv = a.kv
    paged_decode(a.query, kv.kv_cache, kv.block_tables, kv.context_lens, a.scale, workspace=other)
    paged_decode(a.query, kv.kv_cache, kv.block_tables, kv.context_lens, a.scale, check_indices=False,
                 workspace=other)
    assert (len(full_paths), len(other.plans)) == (5, 1)


def test_plans_are_bounded() -> None:
    """The oldest plan goes first; replacing one evicts nothing."""
    plans = DecodePlans(limit=2)
    for key in ("a", "b", "b", "c"):
        plans.put((key,), object())      # type: ignore[arg-type]
    assert ("a",) not in plans and ("b",) in plans and ("c",) in plans and len(plans) == 2


@pytest.mark.gpu
def test_compiled_plans_match_the_full_path() -> None:
    """On a GPU the plan launches through the compiled handle it keeps: bitwise the
    full path's output at the launch benchmark's shapes (split and not)."""
    from bench.problems import decode_problem
    for batch in (8, 64):
        p = decode_problem(batch, 1000, 32, 8, 128, device="cuda", seed=batch)
        case = Case(p.query, PagedKV(p.kv_cache, None, p.block_tables, p.context_lens), p.scale)
        ws = DecodeWorkspace()
        outs = [_unchecked(case, w) for w in (ws, ws, None)]
        plan = ws.plans.get(_key(case, None, max_context_len=p.context))
        assert len(ws.plans) == 1 and plan.split.kern is not None, "no plan with the compiled kernel"
        torch.cuda.synchronize()
        assert torch.equal(outs[1], outs[2]) and torch.equal(outs[0], outs[2]), f"{batch=}"
