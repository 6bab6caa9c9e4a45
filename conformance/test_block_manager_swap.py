"""Worked examples for swapping sequences between GPU and CPU blocks."""
from __future__ import annotations

import pytest

from engine.core.block.block_manager import BlockManager, NoFreeBlocksError
from engine.core.sequence import Sequence


def seq(seq_id: int, n: int, start: int = 0) -> Sequence:
    return Sequence(seq_id, list(range(start, start + n)))


def forked(bm: BlockManager, n: int) -> tuple[Sequence, Sequence]:
    """A parent of n tokens allocated in `bm` and its child forked from it (all blocks shared)."""
    parent = seq(0, n)
    bm.allocate(parent)
    child = parent.fork(1)
    bm.fork(parent, child)
    return parent, child


def test_swap_round_trip_conserves_counts_and_maps_shared_blocks_once():
    bm = BlockManager(4, 16, 16)
    parent, child = forked(bm, 10)
    child.append_token_id(99)
    bm.append_slots(child)                # child now owns a copy of the last block
    tp, tc = bm.get_block_table(parent), bm.get_block_table(child)
    assert tp[:2] == tc[:2] and tp[2] != tc[2]
    out_p = bm.swap_out(parent)
    out_c = bm.swap_out(child)
    assert list(out_p) == tp and list(out_c) == [tc[2]]     # shared blocks map once
    assert bm.num_free_cpu_blocks == 16 - 4 and bm.num_free_gpu_blocks == 16
    cp, cc = bm.get_block_table(parent), bm.get_block_table(child)
    assert cp[:2] == cc[:2] and list(out_p.values()) == cp and out_c == {tc[2]: cc[2]}
    assert [bm.ref_count(b, "cpu") for b in cc] == [2, 2, 1]
    in_p = bm.swap_in(parent)
    in_c = bm.swap_in(child)
    assert list(in_p) == cp and list(in_c) == [cc[2]]
    assert bm.num_free_cpu_blocks == 16 and bm.num_free_gpu_blocks == 16 - 4
    gp, gc = bm.get_block_table(parent), bm.get_block_table(child)
    assert gp[:2] == gc[:2] and [bm.ref_count(b) for b in gc] == [2, 2, 1]
    for s in (parent, child):
        bm.free(s)
    assert bm.num_free_gpu_blocks == 16 and bm.num_free_cpu_blocks == 16


def test_a_block_written_after_its_swap_copy_is_copied_again():
    # parent swaps out; the child then writes the still-shared last block in
    # place, so the parent's CPU copy is stale for the child: copy it again.
    bm = BlockManager(4, 16, 16, enable_prefix_caching=False)
    parent, child = forked(bm, 6)
    out_p = bm.swap_out(parent)
    child.append_token_id(5)
    assert bm.append_slots(child) == []   # child alone holds the block now
    out_c = bm.swap_out(child)
    assert list(out_c) == [list(out_p)[1]]         # g0 linked, g1 copied again
    assert bm.get_block_table(child)[0] == bm.get_block_table(parent)[0]
    assert bm.get_block_table(child)[1] != bm.get_block_table(parent)[1]


def test_swap_mappings_cover_the_table_in_order():
    bm = BlockManager(4, 8, 8, enable_prefix_caching=False)
    s = seq(0, 13)
    bm.allocate(s)
    gpu_table = bm.get_block_table(s)
    out = bm.swap_out(s)
    assert list(out) == gpu_table and list(out.values()) == bm.get_block_table(s)
    cpu_table = bm.get_block_table(s)
    back = bm.swap_in(s)
    assert list(back) == cpu_table and list(back.values()) == bm.get_block_table(s)


def test_can_swap_in_respects_the_watermark_and_can_swap_out_the_cpu():
    bm = BlockManager(4, 10, 2, enable_prefix_caching=False, watermark=0.2)
    s = seq(0, 8)                         # 2 blocks
    bm.allocate(s)
    bm.swap_out(s)
    hog = seq(1, 24, start=100)           # 6 blocks: 4 free, 2 needed, 2 watermark
    bm.allocate(hog)
    assert bm.can_swap_in(s)
    hog.append_token_id(0)
    bm.append_slots(hog)                  # 3 free: 3 - 2 < 2
    assert not bm.can_swap_in(s)
    other = seq(2, 12, start=200)
    bm.allocate(other)
    assert not bm.can_swap_out(other)     # 3 blocks, the CPU has 0 free
    with pytest.raises(NoFreeBlocksError, match="CPU"):
        bm.swap_out(other)


def test_num_blocks_tracks_the_table_on_either_device():
    bm = BlockManager(4, 16, 16)
    s = seq(0, 5)
    bm.allocate(s)
    assert bm.num_blocks_of(s) == len(bm.get_block_table(s)) == 2
    for t in range(4):                     # 9 tokens: a third block
        s.append_token_id(100 + t)
        bm.append_slots(s)
    assert bm.num_blocks_of(s) == len(bm.get_block_table(s)) == 3
    bm.swap_out(s)
    assert bm.num_blocks_of(s) == len(bm.get_block_table(s)) == 3
    with pytest.raises(ValueError):
        bm.num_blocks_of(seq(7, 3))


def test_group_swap_costs_copy_shared_blocks_once():
    bm = BlockManager(4, 16, 8, enable_prefix_caching=False)
    parent, kid = forked(bm, 6)
    assert bm.swap_out_cost([parent, kid]) == 2 and bm.can_swap_out_all([parent, kid])
    out = {**bm.swap_out(parent), **bm.swap_out(kid)}
    assert len(out) == 2 and bm.num_free_cpu_blocks == 6
    assert bm.get_block_table(parent) == bm.get_block_table(kid)
    assert bm.swap_in_cost([parent, kid]) == 2
    back = {**bm.swap_in(parent), **bm.swap_in(kid)}
    assert len(back) == 2 and bm.get_block_table(parent) == bm.get_block_table(kid)
    assert bm.num_free_gpu_blocks == 14 and bm.num_free_cpu_blocks == 8
