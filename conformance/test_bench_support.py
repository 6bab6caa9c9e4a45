"""Pieces of the GPU benchmarks that run on CPU: the read-ceiling kernel (through the
Triton interpreter), the sample statistics and the correctness gate before timing."""
from __future__ import annotations

import pytest
import torch

from bench.ceilings import read_sum
from bench.figures import check_close, rel_error
from bench.timing import Samples


def test_read_kernel_reads_every_element() -> None:
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(3 * 256 + 5, generator=gen)   # a ragged last tile
    out = read_sum(x, block=256, num_warps=4)
    want = torch.nn.functional.pad(x, (0, 256 - 5)).view(4, 256).sum(1)
    assert torch.allclose(out, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="1-D"):
        read_sum(x.view(1, -1))


def test_samples_statistics() -> None:
    s = Samples((5.0, 1.0, 4.0, 2.0, 3.0), "eager")
    assert s.median == 3.0
    assert s.iqr == pytest.approx(4.5 - 1.5)  # statistics.quantiles' exclusive method
    info = s.summary("x_")
    assert info["x_rounds"] == 5 and info["x_timing"] == "eager" and info["x_samples_s"] == list(s.seconds)


def test_check_close_refuses_wrong_or_nan_results() -> None:
    ref = torch.ones(4, 4)
    assert check_close("same", ref.clone(), ref) == 0.0
    with pytest.raises(AssertionError, match="not timing a wrong result"):
        check_close("off", ref * 1.05, ref)
    bad = ref.clone()
    bad[0, 0] = float("nan")
    assert rel_error(bad, ref) != rel_error(bad, ref)  # NaN
    with pytest.raises(AssertionError):
        check_close("nan", bad, ref)


def test_source_commit_names_the_benchmarked_tree(monkeypatch) -> None:
    """A copied tree's stale .git must not name the run: SOURCE_COMMIT wins, the git view is kept."""
    from bench.conftest import pytest_benchmark_update_commit_info
    info = {"id": "stale", "dirty": True}
    monkeypatch.delenv("SOURCE_COMMIT", raising=False)
    pytest_benchmark_update_commit_info(None, info)
    assert info == {"id": "stale", "dirty": True}
    monkeypatch.setenv("SOURCE_COMMIT", "af6b8ed")
    pytest_benchmark_update_commit_info(None, info)
    assert info == {"id": "af6b8ed", "dirty": False, "source": "SOURCE_COMMIT", "git_seen": "stale"}
