"""The decode, write_kv, index-check and sm_90 prefill kernels compile for an H100/H200 (sm_90) on a CPU machine.

The interpreter runs a kernel as Python, so it misses what only the compiler
checks (non-constexpr globals, dot shapes, casts that have no lowering). This
test compiles the compiled-mode variants (INTERPRET=False, native bf16 dots)
to a cubin with Triton's bundled ptxas, in a subprocess without
TRITON_INTERPRET, and checks the rounding instructions write_kv relies on.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

DIV16 = ("q_ptr", "cache_ptr", "scales_ptr", "tables_ptr", "lens_ptr", "out_ptr", "part_acc_ptr", "key_ptr",
         "value_ptr", "slot_ptr", "stride_qb", "stride_qh", "stride_ob", "stride_oh", "stride_cb", "stride_ckv",
         "stride_cs", "stride_ch", "stride_kt", "stride_kh", "stride_vt", "stride_vh")
API_MISMATCH = 3
PTR = {"bf16": "*bf16", "fp16": "*fp16", "fp32": "*fp32", "i8": "*i8", "fp8": "*fp8e4nv"}


def _compile(fn, types: dict, consts: dict, num_warps: int = 4, num_stages: int = 2, **options):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    sig = {n: "constexpr" if n in consts else types.get(n, "i32") for n in fn.arg_names}
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in DIV16 if n in fn.arg_names}
    try:
        src = ASTSource(fn, sig, constexprs=consts, attrs=attrs)
    except TypeError as e:          # another Triton's internal API: not a kernel problem
        print(f"ASTSource API differs: {e}")
        sys.exit(API_MISMATCH)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=num_warps, num_stages=num_stages, **options))


def main() -> None:
    import torch
    import triton
    from kernels.decode_kernels import decode_reduce_kernel, decode_split_kernel
    from kernels.decode_splits import choose_decode_config
    from kernels.paged_decode import fused_merge_chunk
    from kernels.write_kv import _write_kv_kernel
    for q, c, dim, group, quant, split, fused in [
            ("bf16", "bf16", 128, 4, False, False, False), ("bf16", "bf16", 64, 3, False, True, False),
            ("bf16", "bf16", 128, 4, False, True, True), ("fp16", "fp16", 80, 9, False, True, True),
            ("fp32", "fp32", 96, 16, False, False, False), ("bf16", "i8", 128, 4, True, True, True),
            ("fp16", "fp8", 256, 2, True, False, False), ("bf16", "fp8", 128, 4, True, True, False)]:
        pad = max(16, triton.next_power_of_2(dim))
        cfg = choose_decode_config(1, 1, dim, {"fp32": 4, "i8": 1, "fp8": 1}.get(c, 2), 4096, torch.device("cpu"),
                                   num_splits=1)     # the launch the heuristic picks (no split: no SM count)
        block_n = cfg.block_n
        part = "*fp32" if split else PTR[q]
        kernel = _compile(decode_split_kernel,
                 dict(q_ptr=PTR[q], cache_ptr=PTR[c], scales_ptr="*fp32" if quant else PTR[c], tables_ptr="*i32",
                      lens_ptr="*i32", out_ptr=PTR[q], part_acc_ptr=part, part_m_ptr=part, part_l_ptr=part,
                      tickets_ptr="*i32" if split else PTR[q], qk_scale="fp32"),
                 dict(GROUP=group, GROUP_PAD=max(16, triton.next_power_of_2(group)), HEAD_DIM=dim, HEAD_DIM_PAD=pad,
                      BLOCK_SIZE=16, BLOCK_N=block_n, QUANT=quant, QUANT_F16=quant and q != "fp32", IS_INT8=c == "i8",
                      SPLIT=split, FUSED_REDUCE=fused, GROUP_P2=triton.next_power_of_2(group),
                      REDUCE_CHUNK=fused_merge_chunk(group, pad, cfg.num_warps) if fused else 1,
                      DOT_FP32=False,
                      DOT_PRECISION="ieee" if q == "fp32" else "tf32", INTERPRET=False, PDL=split and not fused),
                 num_warps=cfg.num_warps, num_stages=cfg.num_stages)
        ptx = kernel.asm["ptx"]
        # PDL: the attention pass lets the separate reduce launch early; the fused merge has none.
        assert ("griddepcontrol.launch_dependents" in ptx) == (split and not fused)
        # The fused merge: stores, a gpu fence, one acq_rel ticket, a fence again, partials read from L2.
        assert ("fence.acq_rel.gpu" in ptx and "atom.global.gpu.acq_rel.add" in ptx) == fused, f"{q}/{c} fused={fused}"
        if quant and q != "fp32":   # 1-byte K/V reach the float16 dots without per-value conversions
            assert "cvt.bf16.f16" not in ptx and ".s8" not in ptx.replace("prmt", ""), f"{q}/{c}: slow up-cast"
            assert "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32" in ptx

        for pdl in (False, True):      # with PDL the reduce must wait for the partials before reading them
            kernel = _compile(decode_reduce_kernel, dict(out_ptr=PTR[q], part_acc_ptr="*fp32", part_m_ptr="*fp32",
                                                         part_l_ptr="*fp32", lens_ptr="*i32"),
                              dict(HEAD_DIM=dim, HEAD_DIM_PAD=pad, CHUNK=8, INTERPRET=False, PDL=pdl),
                              launch_pdl=pdl)
            assert kernel.metadata.launch_pdl == pdl      # the launch option the launcher passes
            ptx = kernel.asm["ptx"]
            assert ("griddepcontrol.wait" in ptx) == pdl
            if pdl:                    # before the wait only the context length (1 x b32) may be read
                early = [ln for ln in ptx[:ptx.index("griddepcontrol.wait")].splitlines() if "ld.global" in ln]
                assert len(early) == 1 and "ld.global.b32" in early[0], f"read before the wait: {early}"
    for k, c, heads, dim in [("bf16", "bf16", 8, 128), ("fp32", "fp32", 3, 80), ("bf16", "i8", 8, 128),
                             ("fp16", "fp8", 2, 256)]:
        quant = c in ("i8", "fp8")
        ptx = _compile(_write_kv_kernel,
                       dict(key_ptr=PTR[k], value_ptr=PTR[k], cache_ptr=PTR[c],
                            scales_ptr="*fp32" if quant else PTR[c], slot_ptr="*i64"),
                       dict(NUM_KV_HEADS=heads, HEADS_PAD=triton.next_power_of_2(heads), HEAD_DIM=dim,
                            HEAD_DIM_PAD=triton.next_power_of_2(dim), BLOCK_SIZE=16, QUANT=quant,
                            IS_INT8=c == "i8", INTERPRET=False)).asm["ptx"]
        if quant:   # correctly rounded divisions; int8 round-half-even; fp8 one direct rounding
            assert "div.rn.f32" in ptx
            assert ("cvt.rni.f32.f32" in ptx) if c == "i8" else ("cvt.rn.satfinite.e4m3x2.f32" in ptx)
        else:
            assert "ld.global.v4" in ptx and "st.global.v4" in ptx, "16-byte loads/stores expected"
    from kernels.index_checks import _COLS, _ROWS, _index_facts_kernel
    for has_qsl in (False, True):      # the facts kernel of a checked decode / prefill
        _compile(_index_facts_kernel, dict(tables_ptr="*i32", lens_ptr="*i32", qsl_ptr="*i32", facts_ptr="*i64"),
                 dict(HAS_QSL=has_qsl, ROWS=_ROWS, COLS=_COLS))
    _compile_prefill_sm90()
    _compile_decode_quant_mma()
    print("compiled")


def _compile_decode_quant_mma() -> None:
    """The register-only fp8/int8 decode (kernels/decode_quant_mma.py): its layout permutations
    compile as free (assert_trivial), K/V come in 16-byte loads, the bytes become
    float16 by paired converts, and nothing of K/V goes through shared memory (the
    only shared use is the query's one-time reorder and the epilogue's)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    import kernels.decode_quant_mma as fp8
    fn = fp8.decode_quant_mma_kernel
    ptrs = dict(q_ptr="*bf16", cache_ptr="*fp8e4nv", scales_ptr="*fp32", tables_ptr="*i32", lens_ptr="*i32",
                out_ptr="*bf16", part_acc_ptr="*fp32", part_m_ptr="*fp32", part_l_ptr="*fp32", tickets_ptr="*i32",
                qk_scale="fp32")
    for group, page, int8, tile, depth, fused in ((4, 16, False, 32, 1, False), (16, 256, False, 16, 2, True),
                                                  (1, 32, True, 32, 1, True), (4, 16, True, 16, 2, False),
                                                  (8, 16, False, 16, 1, True)):
        consts = dict(GROUP=group, BLOCK_SIZE=page, IS_INT8=int8, TILE=tile, DEPTH=depth, FUSED=fused)
        ptrs["cache_ptr"] = "*i8" if int8 else "*fp8e4nv"
        sig = {n: "constexpr" if n in consts else ptrs.get(n, "i32") for n in fn.arg_names}
        attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in DIV16 + ("stride_tb",)
                 if n in fn.arg_names}
        kernel = triton.compile(GluonASTSource(fn, sig, constexprs=consts, attrs=attrs),
                                target=GPUTarget("cuda", 90, 32), options={"num_warps": 1})
        ptx = kernel.asm["ptx"]
        where = (f"decode_quant_mma {'int8' if int8 else 'fp8'} group {group} page {page} tile {tile} depth {depth} "
                 f"fused {fused}")
        assert ptx.count("ld.global.v4.b32") >= tile // 2, f"{where}: K/V not in 16-byte loads"
        assert "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32" in ptx, where
        assert ("sub.f16x2" in ptx) if int8 else ("cvt.rn.f16x2.e4m3x2" in ptx), f"{where}: not the paired up-cast"
        assert "ld.global.u8" not in ptx and "ld.global.b8" not in ptx, f"{where}: byte-wise loads"
        assert kernel.metadata.shared <= 1024, f"{where}: {kernel.metadata.shared} bytes of shared memory"
        # The in-kernel merge: fence, one acq_rel ticket, the partials re-read from L2 (not a stale L1 line).
        merge = ("fence.acq_rel.gpu", "atom.global.gpu.acq_rel.add", "ld.global.cg", "atom.global.gpu.relaxed.exch")
        assert all((m in ptx) == fused for m in merge), f"{where} fused={fused}: {[m in ptx for m in merge]}"


def _compile_prefill_sm90() -> None:
    """The Gluon prefill (kernels/prefill_sm90.py) for the shapes it takes: TMA page copies,
    async wgmma, a producer warp with its registers given back, and its shared memory
    inside an H100/H200's 227 KB."""
    try:
        from triton.experimental.gluon import language as gl
        from triton.experimental.gluon._runtime import GluonASTSource
    except ImportError as e:
        print(f"no Gluon here: {e}")
        sys.exit(API_MISMATCH)
    import triton
    from triton.backends.compiler import GPUTarget

    import kernels.prefill_sm90 as sm90
    import kernels.prefill_sm90_launch as tiles           # the tile shapes its launcher uses
    for dtype, head_dim, page, split in (("bf16", 128, 16, False), ("fp16", 64, 32, False), ("bf16", 128, 256, False),
                                         ("bf16", 128, 16, True)):
        gdtype = gl.bfloat16 if dtype == "bf16" else gl.float16
        rows = min(page, tiles.BLOCK_N)
        q_layout = gl.NVMMASharedLayout.get_default_for([tiles.BLOCK_M, head_dim], gdtype)
        kv_layout = gl.NVMMASharedLayout.get_default_for([rows, head_dim], gdtype)
        sig = {"q_desc": f"tensordesc<{dtype}[{tiles.BLOCK_M}, {head_dim}],{q_layout!r}>",
               "kv_desc": f"tensordesc<{dtype}[{rows}, {head_dim}],{kv_layout!r}>",
               "out_ptr": PTR[dtype], "bt_ptr": "*i32", "qsl_ptr": "*i32", "ctx_ptr": "*i32",
               "tile_map_ptr": "*i32", "qk_scale": "fp32", "max_tiles": "i32", "stride_ot": "i32",
               "stride_oh": "i32", "stride_bt": "i32"}
        warps = tiles.NUM_WARPS // 2 if split else tiles.NUM_WARPS
        consts = dict(GROUP=4, HEAD_DIM=head_dim, PAGE=page, ROWS=rows, BLOCK_M=tiles.BLOCK_M,
                      BLOCK_N=tiles.BLOCK_N, SPLIT=split, TURNS=split, num_warps=warps)
        sig.update({name: "constexpr" for name in consts})
        kernel = triton.compile(GluonASTSource(sm90.prefill_sm90_kernel, sig, constexprs=consts),
                                target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
        ptx = kernel.asm["ptx"]
        where = f"prefill_sm90 {dtype} D={head_dim} page {page}{' split' if split else ''}"
        assert "wgmma.mma_async" in ptx and "cp.async.bulk.tensor.2d" in ptx, where
        assert "setmaxnreg.dec" in ptx and "setmaxnreg.inc" in ptx, where
        assert kernel.metadata.shared <= 227 * 1024, f"{where}: {kernel.metadata.shared} bytes of shared memory"


def test_kernels_compile_for_sm90() -> None:
    try:
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource  # noqa: F401
    except ImportError as e:
        pytest.skip(f"this triton has no ASTSource/GPUTarget: {e}")
    import triton
    if not os.path.exists(os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")):
        pytest.skip("triton's bundled ptxas is missing")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    run = subprocess.run([sys.executable, os.path.abspath(__file__)], env=env, cwd=root, capture_output=True,
                         text=True, timeout=600)
    if run.returncode == API_MISMATCH:
        pytest.skip(run.stdout.strip()[-300:])
    assert run.returncode == 0 and "compiled" in run.stdout, run.stderr[-4000:]


if __name__ == "__main__":
    main()
