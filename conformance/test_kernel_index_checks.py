"""kernels.validation.check_indices (the one-kernel index checks behind a checked
launch) against a plain-Python oracle of the same rules, on random block tables,
context lengths and query_start_loc: the same error (the first problem, in the
documented order; the first bad block id in row-major order) or the same facts.
On CPU the facts kernel runs in the interpreter; on a GPU compiled."""
from __future__ import annotations

import re

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from kernels.validation import check_indices

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def oracle(table: list[list[int]], lens: list[int], num_blocks: int, block_size: int,
           starts: list[int] | None, num_tokens: int) -> tuple[int, int] | str:
    """(longest context, longest query) or the error message check_indices must raise."""
    if min(lens) < 0:
        return f"context_lens must be >= 0, got {min(lens)}"
    if starts is not None:
        if starts[0] != 0 or starts[-1] != num_tokens:
            return f"query_start_loc must run from 0 to the {num_tokens} query tokens, got {starts[0]} .. {starts[-1]}"
        q = [b - a for a, b in zip(starts, starts[1:])]
        for i, n in enumerate(q):
            if n < 0:
                return f"query_start_loc must be non-decreasing: sequence {i} runs from {starts[i]} to {starts[i + 1]}"
        for i, n in enumerate(q):
            if n > lens[i]:
                return f"sequence {i} has {n} query tokens but context_lens {lens[i]}"
    need = -(-max(lens) // block_size)
    if need > len(table[0]):
        return f"a context of {max(lens)} tokens needs {need} blocks but block_tables has only {len(table[0])} columns"
    for row, ctx in zip(table, lens):
        for b in row[:-(-ctx // block_size)]:
            if not 0 <= b < num_blocks:
                return f"block_tables holds block id {b} outside the cache's {num_blocks} blocks"
    return max(lens), (max(b - a for a, b in zip(starts, starts[1:])) if starts is not None else 0)


@st.composite
def batches(draw: st.DrawFn) -> dict:
    num_seqs = draw(st.integers(1, 20))                 # past one 16-row tile of the kernel
    cols = draw(st.integers(0, 5))
    block_size = draw(st.sampled_from([1, 2, 4, 16]))
    num_blocks = draw(st.integers(1, 12))
    top = cols * block_size
    lens = draw(st.lists(st.one_of(st.integers(0, top), st.integers(-2, top + block_size + 1)),
                         min_size=num_seqs, max_size=num_seqs))
    ids = st.one_of(st.integers(0, num_blocks - 1), st.integers(-3, num_blocks + 2))
    table = [draw(st.lists(ids, min_size=cols, max_size=cols)) for _ in range(num_seqs)]
    starts = None
    num_tokens = 0
    if draw(st.booleans()):
        qlens = [draw(st.one_of(st.integers(0, max(ln, 0)), st.integers(-1, max(ln, 0) + 2))) for ln in lens]
        starts = [0]
        for n in qlens:
            starts.append(starts[-1] + n)
        starts[0] = draw(st.sampled_from([0, 0, 0, 1]))
        num_tokens = starts[-1] + draw(st.sampled_from([0, 0, 0, 1]))
    return dict(table=table, lens=lens, num_blocks=num_blocks, block_size=block_size, starts=starts,
                num_tokens=num_tokens)


@given(batches())
@example(dict(table=[[0, 1], [2, 3]], lens=[8, 5], num_blocks=6, block_size=4, starts=[0, 3, 4], num_tokens=4))
@example(dict(table=[[0, 99], [-1, 3]], lens=[5, 8], num_blocks=6, block_size=4, starts=None, num_tokens=0))
def test_check_indices_matches_oracle(case: dict) -> None:
    table = torch.tensor(case["table"], dtype=torch.int32).reshape(len(case["lens"]), -1).to(DEVICE)
    lens = torch.tensor(case["lens"], dtype=torch.int32, device=DEVICE)
    starts = None if case["starts"] is None else torch.tensor(case["starts"], dtype=torch.int32, device=DEVICE)
    want = oracle(case["table"] or [[]] * len(case["lens"]), case["lens"], case["num_blocks"], case["block_size"],
                  case["starts"], case["num_tokens"])
    if isinstance(want, str):
        with pytest.raises(ValueError, match=re.escape(want)):
            check_indices(table, lens, case["num_blocks"], case["block_size"], starts, case["num_tokens"])
    else:
        assert tuple(check_indices(table, lens, case["num_blocks"], case["block_size"], starts,
                                   case["num_tokens"])) == want


def test_wide_tables_span_several_column_tiles() -> None:
    """A context past one 128-column tile: a bad id in the second tile is found, one past
    the context is not read."""
    table = torch.zeros((3, 300), dtype=torch.int32)
    lens = torch.tensor([290 * 4, 7, 0], dtype=torch.int32)
    table[0, 299] = -7                          # unused by a 1160-token context at block 4 (290 blocks)
    assert check_indices(table.to(DEVICE), lens.to(DEVICE), 1, 4) == (1160, 0)
    table[0, 200] = 5
    with pytest.raises(ValueError, match="block id 5 outside the cache's 1 blocks"):
        check_indices(table.to(DEVICE), lens.to(DEVICE), 1, 4)


@given(batches())
def test_host_facts_equal_the_kernels(case: dict) -> None:
    """Host-memory tensors on a GPU machine take the host path: it must give the kernel's facts."""
    from kernels.index_checks import host_index_facts, read_index_facts
    table = torch.tensor(case["table"], dtype=torch.int32).reshape(len(case["lens"]), -1)
    lens = torch.tensor(case["lens"], dtype=torch.int32)
    starts = None if case["starts"] is None else torch.tensor(case["starts"], dtype=torch.int32)
    on = (lambda t: None if t is None else t.to(DEVICE))
    defined = 3 if starts is None else 8           # facts 3-7 are only written with query_start_loc
    assert host_index_facts(table, lens, case["num_blocks"], case["block_size"], starts)[:defined] == \
        read_index_facts(on(table), on(lens), case["num_blocks"], case["block_size"], on(starts))[:defined]
