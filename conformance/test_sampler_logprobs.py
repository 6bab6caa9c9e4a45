"""Logprobs from the sampler and compute_logprobs against numpy: values equal the
log_softmax of the raw logits, ranks count the strictly better tokens, the top
list is ordered with ties by id, the sampled token is always present."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conformance import sampler_reference as ref
from engine.sampling import SamplingParams
from engine.sampling.logprobs import compute_logprobs
from engine.sampling.sampler import Sampler, SamplingRow, make_generator

TOL = 2e-5


def check_entry(entry, raw: np.ndarray, token: int, k: int) -> None:
    """One TokenLogprobs against the float64 oracle of its raw logits row."""
    lp = ref.log_softmax64(raw)
    rank = ref.ranks(lp)
    assert entry.token_id == token
    assert abs(entry.logprob - lp[token]) <= TOL
    assert entry.rank == rank[token]
    order = ref.top_order(lp)[:min(k, len(lp))]
    assert [t for t, _, _ in entry.top] == order
    np.testing.assert_allclose([v for _, v, _ in entry.top], lp[order], atol=TOL, rtol=0)
    assert [r for _, _, r in entry.top] == rank[order].tolist()
    as_dict = entry.as_dict()
    assert next(iter(as_dict)) == token and as_dict[token] == (entry.logprob, entry.rank)
    assert set(as_dict) == {token, *order}


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@given(seed=st.integers(0, 2**32 - 1), vocab=st.integers(2, 40),
       asks=st.lists(st.none() | st.integers(0, 45), min_size=1, max_size=5),
       temperature=st.sampled_from([0.0, 0.6, 1.0]), penalty=st.sampled_from([1.0, 1.5]))
def test_sampler_logprobs_are_of_the_raw_distribution(device: str, seed: int, vocab: int,
                                                      asks: list, temperature: float,
                                                      penalty: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    # Quarter steps: many exact ties, and distinct logits stay distinct in float32.
    logits = torch.randint(-24, 25, (len(asks), vocab), generator=gen).float() / 4
    rows = [SamplingRow(SamplingParams(logprobs=k, temperature=temperature, top_k=3,
                                       repetition_penalty=penalty), [0, 1], [1])
            for k in asks]
    out = Sampler(make_generator(seed, device))(logits.to(device), rows)
    for i, k in enumerate(asks):
        if k is None:
            assert out.logprobs[i] is None
        else:
            check_entry(out.logprobs[i], logits[i].numpy(), out.token_ids[i], k)


@given(seed=st.integers(0, 2**32 - 1), vocab=st.integers(2, 30), positions=st.integers(1, 6),
       k=st.integers(0, 8), dtype=st.sampled_from([torch.float32, torch.float16]))
def test_compute_logprobs_for_prompt_positions(seed: int, vocab: int, positions: int, k: int,
                                               dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randint(-24, 25, (positions, vocab), generator=gen).float() / 4).to(dtype)
    prompt_next = torch.randint(0, vocab, (positions,), generator=gen).tolist()
    entries = compute_logprobs(logits, prompt_next, [k] * positions)
    for entry, row, token in zip(entries, logits.float().numpy(), prompt_next):
        check_entry(entry, row, token, k)


def test_ties_share_a_rank_and_list_by_id() -> None:
    (entry,) = compute_logprobs(torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0]]), [4], [4])
    assert [(t, r) for t, _, r in entry.top] == [(1, 1), (2, 1), (4, 1), (0, 4)]
    assert entry.rank == 1


def test_compute_logprobs_rejects_bad_input() -> None:
    x = torch.zeros(2, 5)
    with pytest.raises(ValueError, match="2-D"):
        compute_logprobs(torch.zeros(5), [0], [1])
    with pytest.raises(ValueError, match="one entry per logits row"):
        compute_logprobs(x, [0], [1, 1])
    with pytest.raises(ValueError, match=r"token_ids must lie in \[0, 5\)"):
        compute_logprobs(x, [0, 5], [1, 1])
    with pytest.raises(ValueError, match="num_top must be >= 0"):
        compute_logprobs(x, [0, 1], [1, -1])
    assert compute_logprobs(torch.zeros(0, 5), [], []) == []
