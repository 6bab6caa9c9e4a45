"""Launcher argument checks of write_kv and paged_decode: bad input -> ValueError
naming the argument, raised before any launch. A 'meta' tensor stands in for
"another device" on a CPU-only machine."""
from __future__ import annotations

import pytest
import torch

from conformance.kernel_support import size_plan
from conformance.paged_cases import make_paged_kv
from kernels import paged_decode, write_kv

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


@pytest.mark.parametrize("change,match", [
    (lambda a: a.update(query=a["query"].float()), "kv_cache dtype"),
    (lambda a: a.update(query=a["query"].int()), "query dtype"),
    (lambda a: a.update(query=a["query"][:, :, :32]), "head_dim"),
    (lambda a: a.update(query=a["query"][0]), "query must have 3 dims"),
    (lambda a: a.update(query=a["query"][:, :3]), r"query heads \(3\) must be a multiple"),
    (lambda a: a.update(query=a["query"].to("meta")), "kv_cache is on"),
    (lambda a: a.update(kv_cache=a["kv_cache"].to("meta")), "kv_cache is on meta"),
    (lambda a: a.update(context_lens=a["context_lens"].long()), "context_lens dtype"),
    (lambda a: a.update(context_lens=a["context_lens"][:1]), "context_lens has shape"),
    (lambda a: a.update(context_lens=a["context_lens"] * 0 + 40), "block_tables has only"),
    (lambda a: a["block_tables"].__setitem__((1, 0), 999), "block id 999 outside"),
    (lambda a: a["block_tables"].__setitem__((0, 0), -2), "block id -2 outside"),
    (lambda a: a.update(block_tables=a["block_tables"].long()), "block_tables dtype"),
    (lambda a: a.update(block_tables=a["block_tables"][:1]), "block_tables has 1 rows"),
    (lambda a: a.update(scale=float("nan")), "scale must be finite"),
    (lambda a: a.update(scale=0.0), "scale must be finite and > 0"),
    (lambda a: a.update(scale=-1.0), "scale must be finite and > 0"),
    (lambda a: a.update(scale=float("inf")), "scale must be finite"),
    (lambda a: a.update(scale=torch.tensor(0.1)), "scale must be a Python float"),
    (lambda a: a.update(kv_scales=torch.ones(3)), "kv_scales given"),
    (lambda a: a.update(out=torch.empty(2, 4, 64, device=DEV)), "out dtype"),
    (lambda a: a.update(out=torch.empty(2, 4, 32, device=DEV).half()), "out has shape"),
    (lambda a: a.update(num_splits=0), "num_splits must be in 1..65535"),
    (lambda a: a.update(num_splits=70000), "num_splits must be in 1..65535"),
    (lambda a: a.update(block_n=24), "block_n must be a power of two"),
    (lambda a: a.update(max_context_len=4), "max_context_len 4 is shorter"),
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
        paged_decode(**dict(decode_args(), num_splits=2, pdl=True))
    paged_decode(**dict(decode_args(), num_splits=2, pdl=False))        # explicit off: fine
