"""The batched sampler against the numpy oracle (conformance/sampler_reference.py):
processed logits and kept sets exactly, seeded draws independent of the batch,
the draw's distribution (chi-square), greedy, min_tokens, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st
from scipy.stats import chisquare

from conformance import sampler_reference as ref
from engine.sampling import SamplingParams
from engine.sampling.sampler import Sampler, SamplingRow, make_generator

EOS = 1
# CPU always; CUDA on a GPU machine (the same rules, its own random streams).
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
# Decisions this close to a boundary may honestly go either way in float32.
MARGIN = 1e-5

row_params = st.fixed_dictionaries({
    "temperature": st.sampled_from([0.0, 0.3, 0.7, 1.0, 1.7]),
    "top_k": st.sampled_from([0, 1, 2, 3, 7, 1000]),
    "top_p": st.sampled_from([1.0, 0.2, 0.5, 0.75, 0.9]) | st.floats(0.01, 1.0),
    "min_p": st.sampled_from([0.0, 0.05, 0.3, 0.8]),
    "repetition_penalty": st.sampled_from([1.0, 0.7, 1.3, 2.0]),
    "frequency_penalty": st.sampled_from([0.0, -0.5, 0.4, 1.1]),
    "presence_penalty": st.sampled_from([0.0, -1.0, 0.3, 2.0]),
    "min_tokens": st.integers(0, 3),
    "ignore_eos": st.booleans(),
    "stop_token_ids": st.lists(st.integers(0, 40), max_size=3),
})


def draw_logits(gen: torch.Generator, rows: int, vocab: int, quarters: bool) -> torch.Tensor:
    """Quarter steps in [-6, 6] give many exact ties; normal draws give none."""
    if quarters:
        return torch.randint(-24, 25, (rows, vocab), generator=gen).float() / 4
    return torch.randn(rows, vocab, generator=gen) * 3


def draw_history(gen: torch.Generator, vocab: int, low: int, high: int) -> list[int]:
    n = int(torch.randint(low, high + 1, (1,), generator=gen))
    return torch.randint(0, vocab, (n,), generator=gen).tolist()


def reference_row(logits: torch.Tensor, row: SamplingRow) -> ref.Processed:
    p = row.params
    blocked = []
    if len(row.output_token_ids) < p.min_tokens:
        blocked = list(p.stop_token_ids) + ([] if p.ignore_eos else list(row.eos_token_ids))
    return ref.process(logits.cpu().numpy(), ref.RowParams(
        temperature=p.temperature, top_k=p.top_k, top_p=p.top_p, min_p=p.min_p,
        repetition_penalty=p.repetition_penalty, frequency_penalty=p.frequency_penalty,
        presence_penalty=p.presence_penalty, blocked=blocked,
        prompt=row.prompt_token_ids, output=row.output_token_ids))


@pytest.mark.parametrize("device", DEVICES)
@given(seed=st.integers(0, 2**32 - 1), vocab=st.integers(2, 48), quarters=st.booleans(),
       params=st.lists(row_params, min_size=1, max_size=6))
def test_processing_and_kept_sets_equal_the_reference(device: str, seed: int, vocab: int,
                                                      quarters: bool, params: list[dict]) -> None:
    gen = torch.Generator().manual_seed(seed)
    logits = draw_logits(gen, len(params), vocab, quarters)
    rows = [SamplingRow(SamplingParams(**d), draw_history(gen, vocab, 1, 8),
                        draw_history(gen, vocab, 0, 6), eos_token_ids=[EOS]) for d in params]
    sampler = Sampler(make_generator(seed, device))
    processed = sampler.process(logits.to(device), rows).cpu().numpy()
    tokens = sampler(logits.to(device), rows).token_ids
    for i, row in enumerate(rows):
        want = reference_row(logits[i], row)
        mine = processed[i]
        assert np.isfinite(mine[tokens[i]]), f"row {i} sampled a dropped token"
        if row.params.is_greedy:
            np.testing.assert_array_equal(mine, want.values)
            assert tokens[i] == int(np.argmax(want.values))
            continue
        note(f"row {i}: margin {want.margin:.2e}")
        if want.margin < MARGIN:
            continue
        np.testing.assert_array_equal(np.isfinite(mine), want.kept, err_msg=f"row {i} kept set")
        np.testing.assert_array_equal(mine[want.kept], want.values[want.kept])
        assert want.kept[tokens[i]]


ONE_KNOB = {
    "top_k": st.integers(1, 12), "top_p": st.floats(0.01, 0.99), "min_p": st.floats(0.01, 0.99),
    "repetition_penalty": st.floats(0.2, 3.0), "frequency_penalty": st.floats(-2.0, 2.0),
    "presence_penalty": st.floats(-2.0, 2.0), "temperature": st.floats(0.05, 3.0),
    "min_tokens": st.integers(1, 3),
}


@pytest.mark.parametrize("knob", sorted(ONE_KNOB))
@given(seed=st.integers(0, 2**32 - 1), data=st.data())
def test_each_step_alone_equals_the_reference(knob: str, seed: int, data: st.DataObject) -> None:
    """One processing step on, the rest off, over tie-rich logits: a deviation in
    any single rule shows here even where later steps would hide it."""
    vocab = data.draw(st.integers(2, 40))
    gen = torch.Generator().manual_seed(seed)
    logits = draw_logits(gen, 4, vocab, quarters=True)
    values = [data.draw(ONE_KNOB[knob]) for _ in range(4)]
    rows = [SamplingRow(SamplingParams(**{knob: v, "stop_token_ids": [0]}),
                        draw_history(gen, vocab, 1, 6), draw_history(gen, vocab, 0, 6),
                        eos_token_ids=[EOS]) for v in values]
    processed = Sampler().process(logits, rows).numpy()
    for i, row in enumerate(rows):
        want = reference_row(logits[i], row)
        if want.margin >= MARGIN:
            np.testing.assert_array_equal(processed[i], want.values, err_msg=f"{knob}={values[i]}")


def kept(logits: list[float], **params: float) -> list[int]:
    rows = [SamplingRow(SamplingParams(**params))]
    x = Sampler().process(torch.tensor([logits]), rows)[0]
    return torch.isfinite(x).nonzero().flatten().tolist()


def test_tie_rules_at_the_boundaries() -> None:
    # top-k keeps every token tied with the k-th largest.
    assert kept([3.0, 2.0, 2.0, 1.0], top_k=2) == [0, 1, 2]
    assert kept([3.0, 2.0, 2.0, 1.0], top_k=1) == [0]
    # probabilities 0.4, 0.2, 0.2, 0.2: a tie group is kept whole or dropped whole.
    q = np.log([0.4, 0.2, 0.2, 0.2]).tolist()
    assert kept(q, top_p=0.39) == [0]
    assert kept(q, top_p=0.41) == [0, 1, 2, 3]
    # min-p: 0.2 / 0.4 = 0.5 of the top token.
    assert kept(q, min_p=0.49) == [0, 1, 2, 3]
    assert kept(q, min_p=0.51) == [0]
    # the most likely token always stays.
    assert kept([0.0, -30.0, -30.0], top_p=1e-6) == [0]


@pytest.mark.parametrize("device", DEVICES)
@given(seed=st.integers(0, 2**32 - 1), data=st.data())
def test_seeded_rows_do_not_depend_on_the_batch(device: str, seed: int,
                                                data: st.DataObject) -> None:
    vocab = data.draw(st.integers(5, 64))
    steps = data.draw(st.integers(1, 4))
    mine = SamplingParams(seed=seed, temperature=data.draw(st.sampled_from([0.5, 1.0, 1.5])),
                          top_k=data.draw(st.sampled_from([0, 3, 10])),
                          top_p=data.draw(st.sampled_from([1.0, 0.8])), frequency_penalty=0.5)
    # Two sequences of one request (n=2) share the request's generator.
    width = data.draw(st.integers(1, 2))
    gen = torch.Generator().manual_seed(seed ^ 0x5EED)
    my_logits = draw_logits(gen, steps * width, vocab, quarters=False).view(steps, width, vocab)

    def run(others: int, position: int, sampler_seed: int) -> list[list[int]]:
        request_gen = make_generator(seed, device)
        outputs: list[list[int]] = [[] for _ in range(width)]
        sampler = Sampler(make_generator(sampler_seed, device))
        for step in range(steps):
            kinds = [SamplingParams(temperature=0.0), SamplingParams(),
                     SamplingParams(seed=seed + 1, top_p=0.9)]
            rows, logits = [], []
            for j in range(others):
                p = kinds[j % 3]
                gen_j = make_generator(p.seed, device) if p.seed else None
                rows.append(SamplingRow(p, [0], [], gen_j))
                logits.append(torch.randn(vocab, generator=gen))
            for k in range(width):           # one request's rows: together, in index order
                rows.insert(position + k, SamplingRow(mine, [0, 1], list(outputs[k]), request_gen))
                logits.insert(position + k, my_logits[step, k])
            tokens = sampler(torch.stack(logits).to(device), rows).token_ids
            for k in range(width):
                outputs[k].append(tokens[position + k])
        return outputs

    alone = run(0, 0, sampler_seed=1)
    others = data.draw(st.integers(1, 6))
    mixed = run(others, data.draw(st.integers(0, others)), sampler_seed=2)
    assert mixed == alone


def test_seeds_change_the_draw_and_repeat_it() -> None:
    def draw(seed: int) -> list[int]:
        row = SamplingRow(SamplingParams(seed=seed), generator=make_generator(seed))
        return Sampler()(torch.zeros(8, 1000), [row] * 8).token_ids
    assert draw(1) == draw(1)
    assert draw(1) != draw(2)


LOGITS8 = [1.0, 0.5, 0.0, -0.5, 2.0, -1.0, 0.25, 1.5]


def draw_counts(params: SamplingParams, draws: int, seeded: bool = False,
                device: str = "cpu") -> np.ndarray:
    gen = make_generator(2024, device)
    rows = [SamplingRow(params, generator=gen if seeded else None)] * draws
    logits = torch.tensor([LOGITS8], device=device).repeat(draws, 1)
    tokens = Sampler(make_generator(7, device))(logits, rows).token_ids
    return np.bincount(tokens, minlength=len(LOGITS8))


@pytest.mark.parametrize("device", DEVICES)
def test_temperature_sampling_follows_the_softmax(device: str) -> None:
    counts = draw_counts(SamplingParams(temperature=0.7), 20_000, device=device)
    expected = ref.softmax64(np.array(LOGITS8) / 0.7) * counts.sum()
    assert chisquare(counts, expected).pvalue > 1e-3
    # The test has power: the untempered softmax is rejected.
    assert chisquare(counts, ref.softmax64(np.array(LOGITS8)) * counts.sum()).pvalue < 1e-6


@pytest.mark.parametrize("device", DEVICES)
def test_seeded_draws_follow_the_softmax(device: str) -> None:
    counts = draw_counts(SamplingParams(temperature=1.3, seed=5), 4_000, seeded=True, device=device)
    expected = ref.softmax64(np.array(LOGITS8) / 1.3) * counts.sum()
    assert chisquare(counts, expected).pvalue > 1e-3


def test_truncated_sampling_follows_the_renormalised_softmax() -> None:
    params = SamplingParams(temperature=1.3, top_k=6, top_p=0.9, min_p=0.1)
    counts = draw_counts(params, 20_000)
    want = ref.process(np.array(LOGITS8, dtype=np.float32), ref.RowParams(
        temperature=1.3, top_k=6, top_p=0.9, min_p=0.1))
    assert 1 < want.kept.sum() < 6 and want.margin > MARGIN
    assert counts[~want.kept].sum() == 0
    expected = ref.softmax64(want.values)[want.kept] * counts.sum()
    assert chisquare(counts[want.kept], expected).pvalue > 1e-3


def test_greedy_is_argmax_lowest_id_and_draws_nothing() -> None:
    gen = make_generator(3)
    before = gen.get_state()
    logits = torch.tensor([[0.0, 2.0, 2.0, 1.0], [5.0, 5.0, 5.0, 5.0], [-1.0, -3.0, -1.0, -2.0]])
    rows = [SamplingRow(SamplingParams(temperature=0.0, seed=9))] * 3   # a seed needs no generator
    assert Sampler(gen)(logits, rows).token_ids == [1, 0, 0]
    assert torch.equal(gen.get_state(), before)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_min_tokens_blocks_eos_and_stop_ids(temperature: float) -> None:
    stop_id, eos_id, vocab = 3, 5, 8
    logits = torch.full((1, vocab), -4.0)
    logits[0, eos_id] = logits[0, stop_id] = 20.0
    for ignore_eos in (False, True):
        params = SamplingParams(temperature=temperature, min_tokens=2, stop_token_ids=[stop_id],
                                ignore_eos=ignore_eos)
        for done in range(4):
            row = SamplingRow(params, [0], [0] * done, eos_token_ids=[eos_id])
            got = {Sampler(make_generator(k))(logits, [row]).token_ids[0] for k in range(20)}
            if done < 2:
                allowed = {eos_id} if ignore_eos else set(range(vocab)) - {stop_id, eos_id}
                assert got <= allowed
            else:
                assert got <= {stop_id, eos_id}


def test_bad_input_raises_value_error() -> None:
    row = SamplingRow(SamplingParams())
    sampler = Sampler()
    with pytest.raises(ValueError, match="2-D"):
        sampler(torch.zeros(4), [row])
    with pytest.raises(ValueError, match="2-D"):
        sampler(torch.zeros(1, 4, dtype=torch.int64), [row])
    with pytest.raises(ValueError, match="rows has 2 entries for 1 logits rows"):
        sampler(torch.zeros(1, 4), [row, row])
    with pytest.raises(ValueError, match="generator is None.*seed 4"):
        sampler(torch.zeros(1, 4), [SamplingRow(SamplingParams(seed=4))])
    with pytest.raises(ValueError, match="params"):
        sampler(torch.zeros(1, 4), [SamplingRow({"temperature": 1.0})])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"outside \[0, 4\)"):
        sampler(torch.zeros(1, 4), [SamplingRow(SamplingParams(repetition_penalty=1.2), [7])])
