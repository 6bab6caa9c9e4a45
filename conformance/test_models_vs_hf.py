"""Our Llama and OPT models against HF transformers (the model oracle), float32.

Tiny configs with seeded random weights: the HF model's state_dict is loaded into
ours by load_weights, then our model runs through a paged cache (NaN in every
unused slot, shuffled block tables, the torch backend) as (a) one whole-prompt
prefill, (b) two prompt chunks and then one decode per step, (c) a decode and a
prefill of two sequences in one step. Every logits row must match the row of
HF's full forward over the same tokens within 1e-4 relative.
"""
from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, MistralConfig, OPTConfig

from engine.attention import get_attention_backend
from engine.attention.metadata import build_metadata
from engine.model_executor.models import LlamaForCausalLM, OPTForCausalLM, get_model_class

TOL = 1e-4
BLOCK_SIZE = 4
NUM_BLOCKS = 24
LLAMA = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
OPT = dict(vocab_size=128, hidden_size=64, ffn_dim=96, num_hidden_layers=2, num_attention_heads=4,
           max_position_embeddings=64, pad_token_id=1)
LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 32}

CONFIGS = {
    "llama-gqa-untied": lambda: LlamaConfig(**LLAMA, tie_word_embeddings=False),
    "llama-tied-biases-mqa": lambda: LlamaConfig(**{**LLAMA, "num_key_value_heads": 1}, tie_word_embeddings=True,
                                                 attention_bias=True, mlp_bias=True),
    "llama3-rope-scaling": lambda: LlamaConfig(**LLAMA, rope_parameters=LLAMA3_ROPE),
    "mistral": lambda: MistralConfig(**LLAMA, sliding_window=None, head_dim=16),
    "opt-pre-ln": lambda: OPTConfig(**OPT),
    "opt-post-ln": lambda: OPTConfig(**OPT, do_layer_norm_before=False),
    "opt-project-in-out": lambda: OPTConfig(**OPT, word_embed_proj_dim=32),
}


def _hf_model(cfg, seed: int = 0):
    """HF's model with seeded weights of a scale that keeps activations O(1)."""
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=g)
            if p.dim() > 1:
                p.copy_(noise / p.shape[-1] ** 0.5)
            else:
                p.copy_(1 + 0.1 * noise if "norm" in name else 0.1 * noise)
    return model


def _ours(cfg, hf):
    model = get_model_class(cfg)(cfg, get_attention_backend("torch"))
    model.load_weights(hf.state_dict().items())
    return model.eval()


def _hf_logits(hf, tokens: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return hf(torch.tensor([tokens])).logits[0].float()


class PagedCache:
    """A test-side stand-in for the runner: per-sequence block tables drawn from a
    shuffled free list, the step's flat batch and metadata, logits of every row."""

    def __init__(self, model, seed: int, dtype: torch.dtype = torch.float32) -> None:
        self.model = model
        shape = (NUM_BLOCKS, 2, BLOCK_SIZE, model.num_kv_heads, model.head_dim)
        self.caches = [torch.full(shape, float("nan"), dtype=dtype) for _ in range(model.num_layers)]
        self.free = torch.randperm(NUM_BLOCKS, generator=torch.Generator().manual_seed(seed)).tolist()
        self.tables: dict[str, list[int]] = {}
        self.lens: dict[str, int] = {}

    def step(self, work: list[tuple[str, list[int]]], num_decodes: int) -> list[torch.Tensor]:
        ids, positions, tables, qlens, ctxs = [], [], [], [], []
        for sid, toks in work:
            start = self.lens.get(sid, 0)
            table = self.tables.setdefault(sid, [])
            while len(table) * BLOCK_SIZE < start + len(toks):
                table.append(self.free.pop())
            ids += toks
            positions += range(start, start + len(toks))
            tables.append(table)
            qlens.append(len(toks))
            ctxs.append(start + len(toks))
            self.lens[sid] = start + len(toks)
        meta = build_metadata(tables, qlens, ctxs, num_decodes, BLOCK_SIZE, NUM_BLOCKS, "cpu")
        with torch.no_grad():
            hidden = self.model(torch.tensor(ids), torch.tensor(positions), self.caches,
                                [None] * self.model.num_layers, meta)
            logits = self.model.compute_logits(hidden)
        assert logits.dtype == torch.float32 and logits.shape == (len(ids), self.model.vocab_size)
        return list(logits.split(qlens))


def _assert_close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    err = float((ours - ref).abs().amax() / ref.abs().amax())
    assert err <= TOL, f"{what}: relative error {err:.2e}"


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def pair(request):
    cfg = CONFIGS[request.param]()
    hf = _hf_model(cfg)
    return request.param, hf, _ours(cfg, hf)


def test_whole_prompt_prefill(pair):
    name, hf, ours = pair
    tokens = torch.randint(0, 128, (11,), generator=torch.Generator().manual_seed(1)).tolist()
    (logits,) = PagedCache(ours, seed=2).step([("a", tokens)], num_decodes=0)
    _assert_close(logits, _hf_logits(hf, tokens), f"{name} prefill")


def test_chunked_prefill_then_decodes(pair):
    name, hf, ours = pair
    tokens = torch.randint(0, 128, (15,), generator=torch.Generator().manual_seed(3)).tolist()
    ref = _hf_logits(hf, tokens)
    cache = PagedCache(ours, seed=4)
    (first,) = cache.step([("a", tokens[:5])], num_decodes=0)
    (second,) = cache.step([("a", tokens[5:11])], num_decodes=0)
    _assert_close(torch.cat([first, second]), ref[:11], f"{name} two chunks")
    for t in range(11, 15):
        (row,) = cache.step([("a", [tokens[t]])], num_decodes=1)
        _assert_close(row, ref[t:t + 1], f"{name} decode at position {t}")


def test_decode_and_prefill_in_one_step(pair):
    name, hf, ours = pair
    g = torch.Generator().manual_seed(5)
    a = torch.randint(0, 128, (10,), generator=g).tolist()
    b = torch.randint(0, 128, (7,), generator=g).tolist()
    cache = PagedCache(ours, seed=6)
    cache.step([("a", a[:9])], num_decodes=0)
    row_a, rows_b = cache.step([("a", a[9:]), ("b", b)], num_decodes=1)
    _assert_close(row_a, _hf_logits(hf, a)[9:], f"{name} decode beside a prefill")
    _assert_close(rows_b, _hf_logits(hf, b), f"{name} prefill beside a decode")


def test_model_attributes():
    cfg = CONFIGS["llama-tied-biases-mqa"]()
    model = LlamaForCausalLM(cfg, get_attention_backend("torch"))
    assert (model.num_layers, model.num_kv_heads, model.head_dim, model.vocab_size) == (2, 1, 16, 128)
    opt = OPTForCausalLM(CONFIGS["opt-pre-ln"](), get_attention_backend("torch"))
    assert (opt.num_layers, opt.num_kv_heads, opt.head_dim, opt.vocab_size) == (2, 4, 16, 128)


def _state(name: str) -> tuple[object, dict[str, torch.Tensor]]:
    cfg = CONFIGS[name]()
    return cfg, dict(_hf_model(cfg, seed=7).state_dict())


def _fresh(cfg):
    return get_model_class(cfg)(cfg, get_attention_backend("torch"))


@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.update({"model.layers.0.self_attn.extra.weight": torch.zeros(2)}), "unexpected"),
    (lambda sd: sd.pop("model.layers.1.mlp.up_proj.weight"), "missing.*model.layers.1.mlp.up_proj.weight"),
    (lambda sd: sd.update({"model.layers.0.self_attn.k_proj.weight": torch.zeros(16, 64)}), "shape"),
    (lambda sd: sd.pop("lm_head.weight"), "missing.*lm_head.weight"),
])
def test_load_weights_rejects_bad_checkpoints(edit, message):
    cfg, sd = _state("llama-gqa-untied")
    edit(sd)
    with pytest.raises(ValueError, match=message):
        _fresh(cfg).load_weights(sd.items())


def test_load_weights_rejects_a_repeated_tensor():
    cfg, sd = _state("llama-gqa-untied")
    items = list(sd.items())
    with pytest.raises(ValueError, match="twice"):
        _fresh(cfg).load_weights(items + items[:1])


def test_tied_lm_head_may_be_absent_but_not_different():
    cfg, sd = _state("llama-tied-biases-mqa")
    lm_head = sd.pop("lm_head.weight")
    model = _fresh(cfg)
    model.load_weights(sd.items())       # absent: fine
    hidden = torch.randn(3, 64, generator=torch.Generator().manual_seed(8))
    assert torch.equal(model.compute_logits(hidden), hidden @ lm_head.T)
    with pytest.raises(ValueError, match="tied"):
        _fresh(cfg).load_weights([*sd.items(), ("lm_head.weight", lm_head + 1)])


def test_load_weights_copies_in_place_and_ignores_rotary_buffers():
    cfg, sd = _state("llama-gqa-untied")
    model = _fresh(cfg)
    qkv = model.model.layers[0].self_attn.qkv_proj.weight
    ptr = qkv.data_ptr()
    model.load_weights([*sd.items(), ("model.layers.0.self_attn.rotary_emb.inv_freq", torch.ones(8))])
    assert qkv.data_ptr() == ptr
    q, k, v = (sd[f"model.layers.0.self_attn.{p}_proj.weight"] for p in "qkv")
    assert torch.equal(qkv, torch.cat([q, k, v]))


def test_opt_accepts_hub_names_without_the_model_prefix():
    cfg, sd = _state("opt-project-in-out")
    model = _fresh(cfg)
    model.load_weights((name.removeprefix("model."), t) for name, t in sd.items())
    assert torch.equal(model.model.decoder.project_in.weight, sd["model.decoder.project_in.weight"])


def test_get_model_class():
    assert get_model_class(LlamaConfig()) is LlamaForCausalLM
    assert get_model_class(MistralConfig()) is LlamaForCausalLM
    assert get_model_class(OPTConfig(architectures=["OPTForCausalLM"])) is OPTForCausalLM
    with pytest.raises(ValueError, match="GPT2LMHeadModel.*supported.*LlamaForCausalLM"):
        get_model_class(LlamaConfig(architectures=["GPT2LMHeadModel"]))
    with pytest.raises(ValueError, match="gpt2.*OPTForCausalLM"):
        get_model_class(GPT2Config())


@pytest.mark.parametrize("name", ["llama-gqa-untied", "opt-pre-ln"])
def test_bfloat16_runs_close_to_hf_in_bfloat16(name):
    """Dtype plumbing (rotary table, norms, cache) in bfloat16: near HF's own bf16 logits."""
    cfg = CONFIGS[name]()
    hf = _hf_model(cfg)
    ours = _ours(cfg, hf).to(torch.bfloat16)
    hf = hf.to(torch.bfloat16)
    tokens = torch.randint(0, 128, (9,), generator=torch.Generator().manual_seed(9)).tolist()
    cache = PagedCache(ours, seed=10, dtype=torch.bfloat16)
    rows = torch.cat([cache.step([("a", tokens[:8])], num_decodes=0)[0],
                      cache.step([("a", tokens[8:])], num_decodes=1)[0]])
    ref = _hf_logits(hf, tokens)
    err = float((rows - ref).abs().amax() / ref.abs().amax())
    assert err <= 3e-2, f"{name} bf16: relative error {err:.2e}"
