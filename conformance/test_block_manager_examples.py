"""Worked examples for the block manager (vLLM's cases and hand-checked numbers)."""
from __future__ import annotations

import pytest

from engine.core.block.block_manager import (AllocStatus, BlockManager, NoFreeBlocksError,
                                  UnknownSequenceError)
from engine.core.sequence import Sequence


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def seq(seq_id: int, n: int, start: int = 0) -> Sequence:
    return Sequence(seq_id, list(range(start, start + n)))


@pytest.mark.parametrize("n, caching", [(1, False), (15, False), (16, False), (17, False),
                                        (40, False), (1, True), (15, True)])
def test_free_then_allocate_gives_the_same_blocks_100_times(n, caching):
    # With caching on this holds for prompts without a full block only: full
    # blocks stay cached, and the next prompt takes pool blocks first.
    bm = BlockManager(16, 8, 8, enable_prefix_caching=caching)
    first = None
    for i in range(100):
        s = seq(i, n, start=1000 * i)        # different prompts each time
        bm.allocate(s)
        table = bm.get_block_table(s)
        first = first or table
        assert table == first and len(table) == cdiv(n, 16)
        bm.free(s)
        assert bm.num_free_gpu_blocks == 8


def test_with_caching_new_prompts_take_the_pool_before_evicting():
    bm = BlockManager(4, 6, 0)
    tables = []
    for i in range(3):                    # 2 full blocks each: 6 blocks in all
        s = Sequence(i, [10 * i + 1] * 8)
        bm.allocate(s)
        tables.append(bm.get_block_table(s))
        bm.free(s)
    assert sorted(sum(tables, [])) == list(range(6))
    assert sorted(bm.evictable_blocks()) == list(range(6))
    s = Sequence(3, [99] * 4)             # the pool is empty: evict the oldest tail
    bm.allocate(s)
    assert bm.get_block_table(s) == [tables[0][1]]


@pytest.mark.parametrize("n", [5, 16, 33, 48])
def test_free_then_allocate_same_prompt_is_stable_with_caching(n):
    # From the second round on the same prompt maps to the same blocks (the
    # cached prefix plus the pool block that computes the last token).
    bm = BlockManager(16, 8, 8, enable_prefix_caching=True)
    tables, cached = [], []
    for i in range(100):
        s = seq(i, n)
        bm.allocate(s)
        tables.append(bm.get_block_table(s))
        cached.append(bm.get_num_cached_tokens(s))
        bm.free(s)
    assert all(t == tables[1] for t in tables[1:])
    assert cached[0] == 0 and set(cached[1:]) == {(n - 1) // 16 * 16}
    assert bm.num_free_gpu_blocks == 8


@pytest.mark.parametrize("n", [1, 15, 16, 17, 31, 32])
@pytest.mark.parametrize("k", [1, 2, 15, 16, 17, 40])
def test_append_allocates_exactly_the_blocks_crossing_needs(n, k):
    bm = BlockManager(16, 16, 4, enable_prefix_caching=False)
    s = seq(0, n)
    bm.allocate(s)
    free_before = bm.num_free_gpu_blocks
    for t in range(k):
        s.append_token_id(7 + t)
    assert bm.can_append_slots(s)
    assert bm.append_slots(s) == []
    want = cdiv(n + k, 16) - cdiv(n, 16)
    assert free_before - bm.num_free_gpu_blocks == want
    assert len(bm.get_block_table(s)) == cdiv(n + k, 16)


def test_append_with_no_new_tokens_is_a_no_op():
    bm = BlockManager(4, 4, 0)
    s = seq(0, 6)
    bm.allocate(s)
    assert bm.append_slots(s) == [] and bm.get_block_table(s) == [0, 1]


@pytest.mark.parametrize("n", [3, 16, 17, 40])
def test_fork_allocates_nothing_and_shares_every_block(n):
    bm = BlockManager(16, 8, 8)
    parent = seq(0, n)
    bm.allocate(parent)
    free = bm.num_free_gpu_blocks
    child = parent.fork(1)
    bm.fork(parent, child)
    assert bm.num_free_gpu_blocks == free
    assert bm.get_block_table(child) == bm.get_block_table(parent)
    assert all(bm.ref_count(b) == 2 for b in bm.get_block_table(parent))


def test_copy_on_write_only_when_the_shared_last_block_is_partial():
    bm = BlockManager(16, 8, 8, enable_prefix_caching=False)
    full = seq(0, 32)                     # last block full: new tokens go to a new block
    bm.allocate(full)
    twin = full.fork(1)
    bm.fork(full, twin)
    twin.append_token_id(5)
    assert bm.append_slots(twin) == []
    assert bm.get_block_table(twin)[:2] == bm.get_block_table(full)

    part = seq(2, 17)                     # last block partial and shared: copy it
    bm.allocate(part)
    kid = part.fork(3)
    bm.fork(part, kid)
    src = bm.get_block_table(part)[-1]
    kid.append_token_id(5)
    copies = bm.append_slots(kid)
    dst = bm.get_block_table(kid)[-1]
    assert copies == [(src, dst)] and src != dst
    assert bm.get_block_table(kid)[0] == bm.get_block_table(part)[0]
    assert bm.ref_count(src) == 1 and bm.ref_count(dst) == 1
    part.append_token_id(6)               # now the parent owns src alone: no copy
    assert bm.append_slots(part) == [] and bm.get_block_table(part)[-1] == src


def test_copy_on_write_needs_a_free_block():
    bm = BlockManager(4, 2, 0, enable_prefix_caching=False)
    p = seq(0, 5)                         # 2 blocks, the pool is empty
    bm.allocate(p)
    c = p.fork(1)
    bm.fork(p, c)
    c.append_token_id(9)
    assert not bm.can_append_slots(c)
    with pytest.raises(NoFreeBlocksError):
        bm.append_slots(c)
    assert bm.get_block_table(c) == bm.get_block_table(p) == [0, 1]


@pytest.mark.parametrize("n, cached", [(48, 32), (50, 48), (16, 0), (17, 16), (1, 0)])
def test_cached_tokens_leave_the_last_token_to_compute(n, cached):
    bm = BlockManager(16, 64, 64)
    first = seq(0, n)
    bm.allocate(first)
    again = seq(1, n)
    assert bm.get_num_cached_tokens(again) == cached      # before allocate: a lookup
    assert bm.can_allocate(again) is AllocStatus.OK
    bm.allocate(again)
    assert bm.get_num_cached_tokens(again) == cached
    shared = cached // 16
    assert bm.get_block_table(again)[:shared] == bm.get_block_table(first)[:shared]
    assert set(bm.get_block_table(again)[shared:]).isdisjoint(bm.get_block_table(first))


def test_cached_blocks_survive_free_and_count_as_free():
    bm = BlockManager(16, 8, 0)
    bm.allocate(first := seq(0, 50))
    table = bm.get_block_table(first)
    bm.free(first)
    assert bm.num_free_gpu_blocks == 8
    assert sorted(bm.evictable_blocks()) == table[:3]
    bm.allocate(again := seq(1, 50))
    assert bm.get_block_table(again)[:3] == table[:3]
    assert bm.get_num_cached_tokens(again) == 48


def test_lru_eviction_oldest_first_and_deepest_first_among_ties():
    bm = BlockManager(2, 6, 0)
    a, b = Sequence(0, [1, 1, 2, 2, 9]), Sequence(1, [3, 3, 4, 4, 9])
    bm.allocate(a)
    bm.allocate(b)
    ta, tb = bm.get_block_table(a), bm.get_block_table(b)
    bm.free(a)                            # released first: evicted first
    bm.free(b)
    assert bm.evictable_blocks() == [ta[1], ta[0], tb[1], tb[0]]
    big = Sequence(2, [7] * 11)           # 6 blocks: 2 pool blocks, then 4 evictions
    bm.allocate(big)
    table = bm.get_block_table(big)
    assert sorted(table[:2]) == sorted([ta[2], tb[2]])
    assert table[2:] == [ta[1], ta[0], tb[1], tb[0]]
    assert bm.get_num_cached_tokens(Sequence(3, [1, 1, 2, 2, 9])) == 0


def test_lru_eviction_takes_the_pool_first_then_the_tail_of_the_oldest_chain():
    bm = BlockManager(2, 6, 0)
    a, b = Sequence(0, [1, 1, 2, 2, 9]), Sequence(1, [3, 3, 4, 4, 9])
    bm.allocate(a)
    bm.allocate(b)
    a_full = bm.get_block_table(a)[:2]
    bm.free(a)
    bm.free(b)
    bm.allocate(Sequence(2, [7] * 5))     # 3 blocks: the 2 pool blocks, then a's tail
    assert a_full[1] not in bm.evictable_blocks()
    assert bm.evictable_blocks()[0] == a_full[0]
    c = Sequence(3, [1, 1, 2, 2, 9])      # a's head is still a hit
    assert bm.get_num_cached_tokens(c) == 2


def test_duplicate_full_block_stays_private():
    # Two sequences fill identical blocks independently: the first is cached,
    # the second keeps its own block (its table never changes under it).
    bm = BlockManager(4, 8, 0)
    a, b = Sequence(0, [1, 2, 3]), Sequence(1, [1, 2, 3])
    bm.allocate(a)
    bm.allocate(b)
    for s in (a, b):
        s.append_token_id(4)
        bm.append_slots(s)
    ta, tb = bm.get_block_table(a), bm.get_block_table(b)
    assert ta != tb
    assert [e[0] for e in bm.cache_entries()] == ta
    bm.free(b)
    assert bm.evictable_blocks() == []    # b's duplicate went back to the pool


def test_never_when_the_prompt_exceeds_the_gpu():
    bm = BlockManager(16, 4, 4, watermark=0.0)
    assert bm.can_allocate(seq(0, 64)) is AllocStatus.OK
    assert bm.can_allocate(seq(0, 65)) is AllocStatus.NEVER
    bm_wm = BlockManager(16, 10, 4, watermark=0.2)       # 2 watermark blocks
    assert bm_wm.can_allocate(seq(0, 128)) is AllocStatus.OK
    assert bm_wm.can_allocate(seq(0, 129)) is AllocStatus.NEVER


def test_later_when_busy_and_ok_again_after_free():
    bm = BlockManager(16, 4, 4, watermark=0.0)
    big = seq(0, 48)
    bm.allocate(big)
    assert bm.can_allocate(seq(1, 17, start=500)) is AllocStatus.LATER
    bm.free(big)
    assert bm.can_allocate(seq(1, 17, start=500)) is AllocStatus.OK


def test_no_free_blocks_error_names_the_shortfall_and_changes_nothing():
    bm = BlockManager(16, 4, 4, enable_prefix_caching=False)
    bm.allocate(s0 := seq(0, 40))
    with pytest.raises(NoFreeBlocksError, match=r"no free GPU blocks: need 2, 1 free"):
        bm.allocate(seq(1, 20, start=100))
    assert bm.num_free_gpu_blocks == 1 and not bm.has_seq(seq(1, 1))
    assert bm.get_block_table(s0) == [0, 1, 2]


def test_unknown_sequences():
    bm = BlockManager(4, 4, 4)
    ghost = seq(7, 3)
    assert not bm.has_seq(ghost)
    bm.free(ghost)                        # no-op by design (abort paths free twice)
    for call in (bm.get_block_table, bm.append_slots, bm.can_append_slots,
                 bm.swap_out, bm.swap_in, bm.is_on_gpu):
        with pytest.raises(UnknownSequenceError, match="sequence 7"):
            call(ghost)
    with pytest.raises(ValueError, match="sequence 7"):
        bm.fork(ghost, seq(8, 3))


def test_misuse_is_a_value_error():
    bm = BlockManager(4, 4, 4)
    s = seq(0, 5)
    bm.allocate(s)
    with pytest.raises(ValueError, match="already has a block table"):
        bm.allocate(s)
    with pytest.raises(ValueError, match="child sequence 0"):
        bm.fork(s, s)
    with pytest.raises(ValueError, match="not swapped out"):
        bm.swap_in(s)
    bm.swap_out(s)
    with pytest.raises(ValueError, match="swapped out"):
        bm.append_slots(s)


@pytest.mark.parametrize("kwargs, name", [
    (dict(block_size=0), "block_size"), (dict(num_gpu_blocks=0), "num_gpu_blocks"),
    (dict(num_cpu_blocks=-1), "num_cpu_blocks"), (dict(watermark=1.0), "watermark"),
    (dict(hash_fn=3), "hash_fn")])
def test_bad_constructor_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        BlockManager(**kwargs)


# ---- several sequences at once (a parallel-sampling group) -------------------------

def test_append_cost_of_siblings_counts_one_copy_per_holder_that_leaves():
    bm = BlockManager(4, 16, 8, enable_prefix_caching=False)
    parent = seq(0, 6)                                  # a full block and a partial one
    bm.allocate(parent)
    kids = [parent.fork(1), parent.fork(2)]
    for kid in kids:
        bm.fork(parent, kid)
    group = [parent, *kids]
    for s in group:
        s.append_token_id(99)
    assert bm.append_cost(group) == 2                   # the last holder writes in place
    free = bm.num_free_gpu_blocks
    copies = [pair for s in group for pair in bm.append_slots(s)]
    assert free - bm.num_free_gpu_blocks == 2 and len(copies) == 2
    for s in group:                                     # now each crosses into a new block
        s.append_token_id(98)
        s.append_token_id(97)
    assert bm.append_cost(group) == 3


def _parked_x_z_w() -> tuple[BlockManager, int]:
    """5 blocks of 2: X=[1,1], Z=[3,3], W=[4,4] parked in that LRU order, the pool empty."""
    bm = BlockManager(2, 5, 0, enable_prefix_caching=True)
    for i, t in enumerate((1, 3, 4)):
        s = Sequence(10 + i, [t, t, t])
        bm.allocate(s)
        bm.free(s)
    bm.allocate(Sequence(20, [5, 5, 5, 5]))             # holds the last pool blocks
    x = next(b for b, _, toks, _ in bm.cache_entries() if toks == (1, 1))
    assert bm.evictable_blocks()[0] == x and bm.num_free_gpu_blocks == 3
    return bm, x


def test_allocate_all_takes_every_hit_before_any_fresh_block():
    bm, x = _parked_x_z_w()
    a, b = Sequence(0, [6]), Sequence(1, [1, 1, 9])     # b hits X; a hits nothing
    assert bm.can_allocate_all([a, b]) is AllocStatus.OK  # 2 fresh + X = 3 free
    bm.allocate_all([a, b])
    assert bm.get_num_cached_tokens(b) == 2 and bm.get_block_table(b)[0] == x
    assert bm.num_free_gpu_blocks == 0
    # One at a time, a's fresh block would evict X, the oldest parked block.
    bm, x = _parked_x_z_w()
    bm.allocate(Sequence(0, [6]))
    assert x not in bm.evictable_blocks() and bm.get_num_cached_tokens(Sequence(1, [1, 1, 9])) == 0


def test_can_allocate_all_counts_a_shared_evictable_hit_once():
    bm, x = _parked_x_z_w()
    a, b = Sequence(0, [1, 1, 7]), Sequence(1, [1, 1, 8])   # both hit X
    assert bm.can_allocate_all([a, b]) is AllocStatus.OK      # 2 fresh + X once = 3
    assert bm.can_allocate_all([a, b, Sequence(2, [9])]) is AllocStatus.LATER
    assert bm.can_allocate_all([Sequence(3, list(range(12)))]) is AllocStatus.NEVER   # 6 > 5
