"""The two attention backends under one engine: the triton backend (our kernels;
through the Triton interpreter on CPU, compiled on a GPU) and the torch backend
give the same greedy tokens and prompt logprobs on the same tiny model, in a step
mix of prefills, chunks and decodes. (Each backend is held to the float64
oracle on its own in test_torch_backend.py and test_kernel_triton_backend.py.)"""
from __future__ import annotations

import pytest
import torch

from conformance.engine_support import TINY_LLAMA, make_engine, run_all, write_config
from engine.sampling.sampling_params import SamplingParams


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    # head_dim 16: the smallest the prefill kernel takes.
    return write_config(str(tmp_path_factory.mktemp("tiny")), TINY_LLAMA)


@pytest.mark.parametrize("kv_cache_dtype", ["auto", "int8"])
def test_triton_and_torch_backends_agree(model_dir, kv_cache_dtype):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator().manual_seed(5)
    prompts = [torch.randint(3, 256, (n,), generator=g).tolist() for n in (3, 9, 21)]
    params = SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True, prompt_logprobs=1)
    requests = [(str(i), p, params) for i, p in enumerate(prompts)]
    results = {}
    for backend in ("torch", "triton"):
        engine = make_engine(model_dir, attention_backend=backend, device=device, block_size=4,
                             kv_cache_dtype=kv_cache_dtype, enable_chunked_prefill=True,
                             max_num_batched_tokens=12)
        results[backend] = run_all(engine, requests, arrivals=[0, 1, 2])
    tol = 1e-4 if kv_cache_dtype == "auto" else 2e-2
    for rid, _, _ in requests:
        a, b = results["torch"][rid], results["triton"][rid]
        assert a.outputs[0].token_ids == b.outputs[0].token_ids, rid
        for pa, pb in zip(a.prompt_logprobs[1:], b.prompt_logprobs[1:]):
            for tid in pa.keys() & pb.keys():
                assert abs(pa[tid].logprob - pb[tid].logprob) <= tol
