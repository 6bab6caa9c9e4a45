"""Launcher argument checks of write_kv, paged_decode and paged_prefill: bad input ->
ValueError naming the argument, raised before any launch. The checks decode and
prefill share (kernels.validation.check_attention, check_index_tensors,
check_indices) give each problem the same message from both launchers. A 'meta'
tensor stands in for "another device" on a CPU-only machine."""
from __future__ import annotations

import pytest
import torch

from conformance.kernel_support import size_plan
from conformance.paged_cases import make_paged_kv
from kernels import paged_decode, paged_prefill, write_kv

DEV = size_plan().device


def decode_args(cache_dtype: torch.dtype = torch.float16, heads: tuple[int, int] = (4, 2)) -> dict:
    gen = torch.Generator().manual_seed(0)
    kv = make_paged_kv(gen, [5, 17], heads[1], 64, 8, cache_dtype, device=DEV)
    query = torch.randn((2, heads[0], 64), generator=gen).half().to(DEV)
    return dict(query=query, kv_cache=kv.kv_cache, block_tables=kv.block_tables,
                context_lens=kv.context_lens, scale=0.125, kv_scales=kv.kv_scales)


def write_args(cache_dtype: torch.dtype = torch.float16) -> dict:
    cache = torch.zeros((4, 2, 8, 2, 64), dtype=cache_dtype, device=DEV)
    scales = torch.zeros((4, 2, 8, 2), device=DEV) if cache_dtype in (torch.int8, torch.float8_e4m3fn) else None
    key = torch.randn((3, 2, 64), generator=torch.Generator().manual_seed(0)).half().to(DEV)
    return dict(key=key, value=key.clone(), kv_cache=cache, slot_mapping=torch.tensor([0, 5, -1], device=DEV),
                kv_scales=scales)


def test_valid_arguments_pass() -> None:
    """The baselines the other tests break one argument of are themselves valid."""
    paged_decode(**decode_args())
    paged_decode(**decode_args(torch.int8))
    write_kv(**write_args())
    write_kv(**write_args(torch.float8_e4m3fn))


def attention_args(launcher: str, cache_dtype: torch.dtype = torch.float16, head_dim: int = 64,
                   block_size: int = 8) -> dict:
    """Two sequences (contexts 5 and 17) for either launcher: decode gets one query
    row each; prefill the last 2 and 3 tokens of each context."""
    gen = torch.Generator().manual_seed(0)
    kv = make_paged_kv(gen, [5, 17], 2, head_dim, block_size, cache_dtype, device=DEV)
    rows = 2 if launcher == "paged_decode" else 5
    args = dict(query=torch.randn((rows, 4, head_dim), generator=gen).half().to(DEV), kv_cache=kv.kv_cache,
                block_tables=kv.block_tables, context_lens=kv.context_lens, scale=0.125, kv_scales=kv.kv_scales)
    if launcher == "paged_prefill":
        args["query_start_loc"] = torch.tensor([0, 2, 5], dtype=torch.int32, device=DEV)
    return args


LAUNCHERS = {"paged_decode": paged_decode, "paged_prefill": paged_prefill}


def _set(**changes: object):
    """A change that replaces arguments by functions of the old ones."""
    return lambda a: a.update({k: f(a[k]) for k, f in changes.items()})


# (name, attention_args keywords, change, the message both launchers must give)
SHARED_BAD = [
    ("query float", {}, _set(query=lambda q: q.float()),
     r"kv_cache dtype torch.float16 differs from query dtype torch.float32"),
    ("query int", {}, _set(query=lambda q: q.int()), "query dtype int32 not supported"),
    ("query not a tensor", {}, _set(query=lambda q: q.tolist()), "query must be a torch.Tensor, got list"),
    ("query 2-D", {}, _set(query=lambda q: q[0]), "query must have 3 dims"),
    ("query head_dim", {}, _set(query=lambda q: q[:, :, :32]), "kv_cache head_dim 64 differs from query head_dim 32"),
    ("query strided", {}, _set(query=lambda q: q.transpose(1, 2).contiguous().transpose(1, 2)[:, :, :64]),
     r"query must be contiguous in head_dim"),
    ("query heads", {}, _set(query=lambda q: q[:, :3]), r"query heads \(3\) must be a multiple of the cache's kv heads \(2\)"),
    ("query device", {}, _set(query=lambda q: q.to("meta")), "kv_cache is on .*, expected meta"),
    ("cache device", {}, _set(kv_cache=lambda c: c.to("meta")), "kv_cache is on meta"),
    ("cache 4-D", {}, _set(kv_cache=lambda c: c[:, 0]), "kv_cache must have 5 dims"),
    ("cache dim 1", {}, _set(kv_cache=lambda c: torch.cat([c, c[:, :1]], 1)), "kv_cache dim 1 must be 2"),
    ("head_dim small", dict(head_dim=8), None, r"head_dim 8 not supported \(16..256\)"),
    ("head_dim large", dict(head_dim=264), None, r"head_dim 264 not supported \(16..256\)"),
    ("block size", dict(block_size=6), None, r"kv_cache block_size 6 not supported \(a power of two\)"),
    ("stray scales", {}, _set(kv_scales=lambda s: torch.ones(3)), "kv_scales given for a torch.float16 cache"),
    ("missing scales", dict(cache_dtype=torch.int8), _set(kv_scales=lambda s: None), "kv_scales is required"),
    ("scales dtype", dict(cache_dtype=torch.int8), _set(kv_scales=lambda s: s.half()), "kv_scales dtype float16"),
    ("scales shape", dict(cache_dtype=torch.float8_e4m3fn), _set(kv_scales=lambda s: s[:, :, :4]),
     "kv_scales has shape"),
    ("lens dtype", {}, _set(context_lens=lambda c: c.long()), "context_lens dtype int64 not supported"),
    ("lens device", {}, _set(context_lens=lambda c: c.to("meta")), "context_lens is on meta"),
    ("table dtype", {}, _set(block_tables=lambda t: t.long()), "block_tables dtype int64 not supported"),
    ("table rows", {}, _set(block_tables=lambda t: t[:1]), r"block_tables has 1 rows, expected 2 \(one per sequence\)"),
    ("table strided", {}, _set(block_tables=lambda t: t.t().contiguous().t()),
     r"block_tables must be contiguous along its columns"),
    ("table too narrow", {}, _set(context_lens=lambda c: c * 0 + 40),
     "a context of 40 tokens needs 5 blocks but block_tables has only 4 columns"),
    ("block id too big", {}, lambda a: a["block_tables"].__setitem__((1, 2), 999),
     r"block_tables holds block id 999 outside the cache's \d+ blocks"),
    ("block id negative", {}, lambda a: a["block_tables"].__setitem__((0, 0), -2), "block id -2 outside"),
    ("negative context", {}, _set(context_lens=lambda c: c * 0 - 1), "context_lens must be >= 0, got -1"),
    ("scale nan", {}, _set(scale=lambda s: float("nan")), "scale must be finite and > 0, got nan"),
    ("scale zero", {}, _set(scale=lambda s: 0.0), "scale must be finite and > 0"),
    ("scale inf", {}, _set(scale=lambda s: float("inf")), "scale must be finite and > 0"),
    ("scale tensor", {}, _set(scale=lambda s: torch.tensor(0.1)), "scale must be a Python float, got Tensor"),
    ("scale bool", {}, _set(scale=lambda s: True), "scale must be a Python float, got bool"),
    ("out dtype", {}, lambda a: a.update(out=torch.empty(a["query"].shape, device=DEV)), "out dtype float32"),
    ("out shape", {}, lambda a: a.update(out=torch.empty(a["query"][:, :, :32].shape, device=DEV).half()),
     "out has shape"),
    ("out device", {}, lambda a: a.update(out=torch.empty(a["query"].shape, device="meta").half()), "out is on meta"),
    ("out strided", {}, lambda a: a.update(out=torch.empty(a["query"].shape + (2,), device=DEV).half()[..., 0]),
     r"out must be contiguous in head_dim"),
]


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
@pytest.mark.parametrize("name,case,change,match", SHARED_BAD, ids=[b[0] for b in SHARED_BAD])
def test_attention_launchers_reject(launcher: str, name: str, case: dict, change, match: str) -> None:
    """The same bad input gets the same clear error from paged_decode and paged_prefill."""
    args = attention_args(launcher, **case)
    if change is not None:
        change(args)
    with pytest.raises(ValueError, match=match):
        LAUNCHERS[launcher](**args)


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_attention_baselines_are_valid(launcher: str) -> None:
    """What SHARED_BAD breaks is valid before: finite outputs at every case's shape."""
    for case in ({}, dict(head_dim=16), dict(head_dim=256, block_size=16), dict(cache_dtype=torch.int8)):
        out = LAUNCHERS[launcher](**attention_args(launcher, **case))
        assert torch.isfinite(out.float()).all(), (launcher, case)


@pytest.mark.parametrize("change,match", [
    (lambda a: a.update(context_lens=a["context_lens"][:1]), "context_lens has shape"),
    (lambda a: a.update(num_splits=0), "num_splits must be in 1..65535"),
    (lambda a: a.update(num_splits=70000), "num_splits must be in 1..65535"),
    (lambda a: a.update(block_n=24), "block_n must be a power of two"),
    (lambda a: a.update(max_context_len=4), "max_context_len 4 is shorter"),
    (lambda a: a.update(max_context_len=-1), "max_context_len must be a Python int >= 0"),
    (lambda a: a.update(max_context_len=17.0), "max_context_len must be a Python int >= 0"),
])
def test_paged_decode_rejects(change, match: str) -> None:
    args = decode_args()
    change(args)
    with pytest.raises(ValueError, match=match):
        paged_decode(**args)


@pytest.mark.parametrize("change,match", [
    (lambda a: a.update(kv_scales=None), "kv_scales is required"),
    (lambda a: a.update(kv_scales=a["kv_scales"].half()), "kv_scales dtype"),
    (lambda a: a.update(kv_scales=a["kv_scales"][:, :, :4]), "kv_scales has shape"),
])
def test_paged_decode_rejects_bad_scales(change, match: str) -> None:
    args = decode_args(torch.int8)
    change(args)
    with pytest.raises(ValueError, match=match):
        paged_decode(**args)


@pytest.mark.parametrize("change,match", [
    (lambda a: a.update(key=a["key"][0]), "key must have 3 dims"),
    (lambda a: a.update(value=a["value"][:2]), "value has shape"),
    (lambda a: a.update(value=a["value"].float()), "value dtype"),
    (lambda a: a.update(key=a["key"].float(), value=a["value"].float()), "kv_cache dtype"),
    (lambda a: a.update(key=a["key"][:, :, :32], value=a["value"][:, :, :32]), "head_dim"),
    (lambda a: a.update(key=a["key"].to("meta"), value=a["value"].to("meta")), "kv_cache is on"),
    (lambda a: a.update(value=a["value"].to("meta")), "value is on meta"),
    (lambda a: a.update(slot_mapping=a["slot_mapping"].to("meta")), "slot_mapping is on meta"),
    (lambda a: a.update(slot_mapping=a["slot_mapping"].float()), "slot_mapping dtype"),
    (lambda a: a.update(slot_mapping=a["slot_mapping"][:2]), "slot_mapping has shape"),
    (lambda a: a["slot_mapping"].__setitem__(1, 64), "slot 64 outside"),
    (lambda a: a["slot_mapping"].__setitem__(1, -2), "slot -2 outside"),
    (lambda a: a.update(kv_scales=torch.ones(4, 2, 8, 2, device=DEV)), "kv_scales given"),
    (lambda a: a.update(kv_cache=a["kv_cache"][:, 0]), "kv_cache must have 5 dims"),
])
def test_write_kv_rejects(change, match: str) -> None:
    args = write_args()
    change(args)
    with pytest.raises(ValueError, match=match):
        write_kv(**args)


def test_write_kv_quantised_needs_scales() -> None:
    args = write_args(torch.int8)
    args["kv_scales"] = None
    with pytest.raises(ValueError, match="kv_scales is required"):
        write_kv(**args)


def test_cpu_tensors_rejected_without_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compiled Triton needs CUDA: CPU tensors outside the interpreter are a device error."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    args = decode_args()
    args.update({k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in args.items()})
    with pytest.raises(ValueError, match="needs a CUDA device"):
        paged_decode(**args)
    wargs = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in write_args().items()}
    with pytest.raises(ValueError, match="needs a CUDA device"):
        write_kv(**wargs)


def test_unchecked_indices_still_check_shapes() -> None:
    """check_indices=False skips only the syncing range checks (for graph capture)."""
    args = decode_args()
    args["block_tables"] = args["block_tables"][:1]
    with pytest.raises(ValueError, match="block_tables has 1 rows"):
        paged_decode(**args, check_indices=False, max_context_len=17)
    args = decode_args()
    args["block_tables"] = args["block_tables"].long()
    with pytest.raises(ValueError, match="block_tables dtype"):
        paged_decode(**args, check_indices=False, max_context_len=17)
    wargs = write_args()
    wargs["slot_mapping"] = wargs["slot_mapping"].float()
    with pytest.raises(ValueError, match="slot_mapping dtype"):
        write_kv(**wargs, check_indices=False)


def test_block_table_checks_only_the_blocks_in_use() -> None:
    """Columns past a sequence's last block are never read, so junk there is fine;
    the output is unchanged; a bad id in use is reported (the first, row-major)."""
    args = decode_args()
    ref = paged_decode(**args)
    args["block_tables"][0, -1] = 999          # context 5 at block size 8 uses column 0 only
    assert torch.equal(paged_decode(**args), ref)
    args["block_tables"][1, 2] = 777           # context 17 uses columns 0..2
    args["block_tables"][1, 1] = -5
    with pytest.raises(ValueError, match="block id -5 outside"):
        paged_decode(**args)


@pytest.mark.skipif(torch.cuda.is_available(), reason="where PDL works, pdl=True is a valid request")
def test_pdl_request_rejected_where_unavailable() -> None:
    """pdl=True under the interpreter (or before sm_90) is an error, not a silent plain launch."""
    with pytest.raises(ValueError, match="pdl=True needs compiled Triton on a CUDA device"):
        paged_decode(**dict(decode_args(), num_splits=2, pdl=True, split_reduce="kernel"))
    paged_decode(**dict(decode_args(), num_splits=2, pdl=False, split_reduce="kernel"))   # explicit off: fine


def test_split_reduce_choices_are_checked() -> None:
    """An unknown split_reduce, or PDL asked of the fused merge (it has no second launch), is an error;
    pdl=True with the automatic choice takes the reduce kernel (here: the interpreter's PDL error)."""
    with pytest.raises(ValueError, match="split_reduce must be one of"):
        paged_decode(**dict(decode_args(), num_splits=2, split_reduce="tree"))
    with pytest.raises(ValueError, match="needs split_reduce='kernel'"):
        paged_decode(**dict(decode_args(), num_splits=2, pdl=True, split_reduce="fused"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="pdl=True needs compiled Triton"):
            paged_decode(**dict(decode_args(), num_splits=2, pdl=True))
