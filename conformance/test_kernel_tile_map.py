"""kernels/tile_map.py: the prefill tile map, built by one launch, equals the order it
promises (sequence by sequence, longest context first with ties in batch order,
each sequence's tiles last first, then idle programs), for batches that span
several programs (32 sequences each) and several comparison steps (128)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kernels.tile_map import build_tile_map, host_tile_map, max_tiles

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def expected_map(qlens: list[int], ctx: list[int], block_m: int) -> tuple[list[int], list[int]]:
    """(sequence, tile) rows of the map, from the promise read literally: sort every
    real tile by (longer context, earlier sequence, later tile) and pad with (-1, 0)."""
    tiles = sorted(((-ctx[i], i, -t) for i, q in enumerate(qlens) for t in range(-(-q // block_m))))
    width = max_tiles(sum(qlens), len(qlens), block_m)
    seq = [i for _, i, _ in tiles] + [-1] * (width - len(tiles))
    tile = [-t for _, _, t in tiles] + [0] * (width - len(tiles))
    return seq, tile


def _inputs(qlens: list[int], prefixes: list[int]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    starts = [0]
    for q in qlens:
        starts.append(starts[-1] + q)
    ctx = [q + p for q, p in zip(qlens, prefixes)]
    return (torch.tensor(starts, dtype=torch.int32, device=DEVICE),
            torch.tensor(ctx, dtype=torch.int32, device=DEVICE), ctx)


def _check(qlens: list[int], prefixes: list[int], block_m: int) -> None:
    qsl, ctx_t, ctx = _inputs(qlens, prefixes)
    got = build_tile_map(qsl, ctx_t, sum(qlens), block_m)
    assert got.dtype == torch.int32 and got.device.type == torch.device(DEVICE).type
    seq, tile = expected_map(qlens, ctx, block_m)
    assert got.cpu().tolist() == [seq, tile]
    assert host_tile_map(qsl.tolist(), ctx_t.tolist(), len(seq), block_m).tolist() == [seq, tile]


@given(st.lists(st.tuples(st.integers(0, 70), st.sampled_from([0, 3, 17, 64])), min_size=1, max_size=80),
       st.sampled_from([16, 32, 64, 128]))
def test_tile_map_matches_its_order(batch: list[tuple[int, int]], block_m: int) -> None:
    """Few distinct prefixes, so equal contexts (the tie rule) are common."""
    _check([q for q, _ in batch], [p for _, p in batch], block_m)


def test_tile_map_large_batch() -> None:
    """300 sequences: ten programs, three comparison steps each, a long idle tail."""
    qlens = [(7 * i) % 41 for i in range(300)]
    prefixes = [(13 * i) % 5 * 100 for i in range(300)]
    _check(qlens, prefixes, 16)


def test_tile_map_long_sequence() -> None:
    """One sequence with more tiles than one 128-wide store step."""
    _check([128 * 16 * 2 + 5, 1], [0, 4000], 16)


@pytest.mark.parametrize("qlens", [[0], [0, 0, 0]])
def test_tile_map_without_query_tokens(qlens: list[int]) -> None:
    """No query tokens: every program idle (the map may even be empty)."""
    _check(qlens, [5] * len(qlens), 16)


@pytest.mark.parametrize("starts,ctx", [
    ([0, 5000, 10], [5000, 7]),                       # a decreasing prefix sum, a query past its context
    ([0, 2**30, 2**31 - 1], [2**30, 2**31 - 1]),      # tiles past any width (and past int32 when summed)
    ([-2**31, 0, 3], [-5, 3]),                        # negative starts and contexts
])
def test_unchecked_batch_writes_only_inside_the_map(starts: list[int], ctx: list[int]) -> None:
    """kernels/prefill_plan.py builds the map before the index checks have read the
    batch: whatever its contents, the kernel writes inside [2, width] and nowhere else
    (the map sits between two guard bands of a larger buffer)."""
    from kernels.launch import launch
    from kernels.tile_map import _COLS, _KERNEL, _ROWS
    width, guard = 40, 64
    buf = torch.full((2 * guard + 2 * width,), -7, dtype=torch.int32, device=DEVICE)
    tile_map = buf[guard:guard + 2 * width]
    qsl = torch.tensor(starts, dtype=torch.int32, device=DEVICE)
    lens = torch.tensor(ctx, dtype=torch.int32, device=DEVICE)
    launch(_KERNEL, (1, 1, 1), (qsl, lens, tile_map), (len(ctx), width, 16), (_ROWS, _COLS), (("num_warps", 4),))
    rest = torch.cat([buf[:guard], buf[guard + 2 * width:]]).cpu()
    assert torch.all(rest == -7), "the kernel wrote outside its map"
