"""oneDNN-packed weights (engine/model_executor/layers/linear.py) against a float64
oracle, and in the engine: a CPU float32 engine serves every linear layer and the
logits head from them, and gives the same greedy tokens as torch's F.linear path."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conformance.engine_support import TINY_LLAMA, make_engine, run_all, tokens_of, write_config
from engine.model_executor.layers import Linear, PackedGemm
from engine.model_executor.layers.linear import packed_gemm_unavailable
from engine.sampling.sampling_params import SamplingParams

pytestmark = pytest.mark.skipif(packed_gemm_unavailable(torch.device("cpu"), torch.float32) is not None,
                                reason=str(packed_gemm_unavailable(torch.device("cpu"), torch.float32)))


@pytest.mark.parametrize("rows", [1, 3, 16, 77])
@pytest.mark.parametrize("bias", [False, True])
def test_packed_gemm_matches_the_float64_product(rows, bias) -> None:
    g = torch.Generator().manual_seed(rows)
    w = torch.randn(45, 37, generator=g)
    b = torch.randn(45, generator=g) if bias else None
    x = torch.randn(rows, 37, generator=g)
    ref = F.linear(x.double(), w.double(), None if b is None else b.double())
    out = PackedGemm(w, b)(x)
    assert out.dtype == torch.float32 and out.shape == (rows, 45)
    assert (out.double() - ref).abs().max().item() < 1e-4


def test_packed_gemm_takes_batched_and_strided_inputs() -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(20, 12, generator=g)
    gemm = PackedGemm(w)
    x3 = torch.randn(2, 5, 12, generator=g)
    assert torch.allclose(gemm(x3), F.linear(x3, w), atol=1e-5)
    xt = torch.randn(12, 7, generator=g).t()               # not contiguous
    assert torch.allclose(gemm(xt), F.linear(xt, w), atol=1e-5)


def test_a_weight_changed_after_packing_is_refused() -> None:
    layer = Linear(8, 4)
    layer.requires_grad_(False)
    layer.pack()
    layer(torch.randn(2, 8))
    with torch.no_grad():
        layer.weight.mul_(2)
    with pytest.raises(RuntimeError, match="changed after it was packed"):
        layer(torch.randn(2, 8))
    layer.pack()                                            # packed again: the new weight
    x = torch.randn(2, 8)
    assert torch.allclose(layer(x), F.linear(x, layer.weight, layer.bias), atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_other_dtypes_are_refused_with_the_reason(dtype) -> None:
    assert "float32 only" in packed_gemm_unavailable(torch.device("cpu"), dtype)
    with pytest.raises(ValueError, match="float32 only"):
        PackedGemm(torch.randn(4, 4, dtype=dtype))


@pytest.mark.parametrize("tied", [False, True])
def test_the_engine_serves_its_gemms_packed_and_tokens_equal_the_plain_path(tmp_path, tied) -> None:
    folder = write_config(str(tmp_path), {**TINY_LLAMA, "tie_word_embeddings": tied})
    prompts = [[5, 9, 2, 7, 1], list(range(3, 40)), [11] * 17]
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True)
    runs = {}
    for pack in (True, False):
        engine = make_engine(folder, pack_cpu_gemms=pack)
        model = engine.runner.model
        linears = [m for m in model.modules() if isinstance(m, Linear)]
        assert linears
        if pack:
            assert model.gemm_path == "oneDNN packed weights"
            assert model.head_gemm is not None and all(m.packed is not None for m in linears)
            # untied: the head's packed copy is the lm_head's own; tied: one of the embedding
            assert (model.head_gemm is model.lm_head.packed) if not tied else \
                (model.head_gemm.weight is model.model.embed_tokens.weight)
        else:
            assert model.gemm_path.startswith("torch F.linear") and model.head_gemm is None
            assert all(m.packed is None for m in linears)
        runs[pack] = tokens_of(run_all(engine, [(f"r{i}", p, params) for i, p in enumerate(prompts)]))
    assert runs[True] == runs[False]
