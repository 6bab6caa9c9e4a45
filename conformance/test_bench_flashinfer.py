"""The FlashInfer peer's host side and the extend problem, on CPU: the CSR page list
it hands FlashInfer must name exactly our blocks, the extend problem and its SDPA
peer must be the oracle's causal-at-the-end attention, and where FlashInfer cannot
run the benchmark records why instead of timing something else."""
from __future__ import annotations

import pytest
import torch

from bench.peer_flashinfer import paged_indices, time_settings, unavailable_reason
from bench.peers import sdpa_extend
from bench.problems import extend_problem
from conformance.paged_cases import rel_error
from reference.attention import paged_prefill


@pytest.mark.parametrize("lens", [[1], [16], [17, 40, 3], [32, 1, 48]])
def test_paged_indices_name_each_sequences_blocks_in_order(lens) -> None:
    page = 16
    cols = 4
    gen = torch.Generator().manual_seed(len(lens))
    table = torch.randperm(len(lens) * cols, generator=gen).view(len(lens), cols).to(torch.int32)
    indptr, indices, last = paged_indices(table, torch.tensor(lens, dtype=torch.int32), page)
    for i, n in enumerate(lens):          # the oracle: a sequence's first ceil(n / page) blocks
        pages = -(-n // page)
        assert indices[indptr[i]:indptr[i + 1]].tolist() == table[i, :pages].tolist()
        assert last[i].item() == n - (pages - 1) * page and 1 <= last[i].item() <= page
    assert indptr[0] == 0 and indptr[-1] == len(indices)
    assert indptr.dtype == indices.dtype == last.dtype == torch.int32


def test_paged_indices_refuse_what_the_table_cannot_hold() -> None:
    table = torch.zeros((2, 2), dtype=torch.int32)
    with pytest.raises(ValueError, match="more than the table's 2 blocks"):
        paged_indices(table, torch.tensor([5, 33], dtype=torch.int32), 16)
    with pytest.raises(ValueError, match=">= 1"):
        paged_indices(table, torch.tensor([5, 0], dtype=torch.int32), 16)
    with pytest.raises(ValueError, match="must agree"):
        paged_indices(table, torch.tensor([5], dtype=torch.int32), 16)


def test_extend_problem_and_its_sdpa_peer_match_the_oracle() -> None:
    p = extend_problem(2, 5, 35, 4, 2, 16, torch.float32, device="cpu", seed=2)
    assert p.query.shape == (10, 4, 16) and p.query_start_loc.tolist() == [0, 5, 10]
    assert p.context_lens.tolist() == [40, 40]
    ref = paged_prefill(p.query.double(), p.kv_cache.double(), p.block_tables, p.query_start_loc,
                        p.context_lens, p.scale)
    k, v = (t.repeat_interleave(2, dim=1) for t in (p.k, p.v))
    out = sdpa_extend(p.q, k, v, p.scale).transpose(1, 2).reshape(p.query.shape)
    assert rel_error(out, ref) < 1e-5
    # causal pairs: query i of 5 sees the 35 cached tokens and i + 1 new ones (counted as Q^2 / 2)
    assert p.causal_flops() == 2 * 2 * 2 * 4 * 16 * (5 * 35 + 5 * 5 / 2)


def test_flashinfer_absent_is_recorded_not_timed() -> None:
    if unavailable_reason() is None:
        pytest.skip("FlashInfer runs here: the GPU benchmarks exercise it")
    info: dict[str, object] = {}
    built = []
    time_settings(lambda s: built.append(s), ("fa2",), torch.zeros(1), None, None, None, info)
    assert built == [] and "flashinfer_note" in info and "speedup_vs_flashinfer" not in info


def test_stopped_module_builds_skip_the_peer(monkeypatch: pytest.MonkeyPatch) -> None:
    """After gpu_suite.sh stopped FlashInfer's builds, the peer is a recorded skip with the
    suite's reason, even on a CUDA machine where flashinfer imports: nothing is built or timed."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("PAGEDLM_FLASHINFER_SKIP", "its module builds were stopped at the suite's 189s cap")
    info: dict[str, object] = {}
    built = []
    time_settings(lambda s: built.append(s), ("fa3", "fa2"), torch.zeros(1), None, None, None, info)
    assert built == [] and "speedup_vs_flashinfer" not in info
    assert info["flashinfer_note"] == "skipped: its module builds were stopped at the suite's 189s cap"
