"""Prefix cache under forced hash collisions: KV is never shared wrongly.

The hash function is injectable; these tests inject bad ones. A slot's "KV" is
modelled as the whole token context it was computed from, so any block shared
across different prefixes shows up as a wrong context.
"""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.block.block_manager import AllocStatus, BlockManager
from engine.core.block.prefix_cache import PrefixCache
from engine.core.sequence import Sequence

BAD_HASHES = {
    "constant": lambda parent, tokens: 0,
    "ignores_parent": lambda parent, tokens: hash(tokens),
    "two_buckets": lambda parent, tokens: hash((parent, tokens)) % 2,
}


def test_collision_with_different_tokens_is_a_miss():
    bm = BlockManager(4, 16, 0, hash_fn=BAD_HASHES["constant"])
    a = Sequence(0, [1, 1, 1, 1, 2, 2, 2, 2, 9])
    bm.allocate(a)
    b = Sequence(1, [3, 3, 3, 3, 2, 2, 2, 2, 9])     # same hash, other tokens
    assert bm.get_num_cached_tokens(b) == 0
    bm.allocate(b)
    assert set(bm.get_block_table(a)).isdisjoint(bm.get_block_table(b))
    c = Sequence(2, list(a.token_ids))                # true hit on the first block
    bm.allocate(c)
    assert bm.get_num_cached_tokens(c) == 4
    assert bm.get_block_table(c)[0] == bm.get_block_table(a)[0]


def test_same_block_tokens_after_a_different_prefix_is_a_miss():
    # With a hash that ignores the parent, block [2,2,2,2] after [5,5,5,5]
    # hashes like the one after [1,1,1,1]; the entry's parent must match too.
    bm = BlockManager(4, 16, 0, hash_fn=BAD_HASHES["ignores_parent"])
    a = Sequence(0, [1, 1, 1, 1, 2, 2, 2, 2, 9])
    bm.allocate(a)
    b = Sequence(1, [5, 5, 5, 5, 2, 2, 2, 2, 9])
    bm.allocate(b)                                    # registers [5,5,5,5] only
    c = Sequence(2, [5, 5, 5, 5, 2, 2, 2, 2, 9])
    bm.allocate(c)
    assert bm.get_num_cached_tokens(c) == 4
    assert bm.get_block_table(c)[0] == bm.get_block_table(b)[0]
    assert bm.get_block_table(c)[1] != bm.get_block_table(a)[1]


def test_match_checks_tokens_and_parent():
    cache = PrefixCache(BAD_HASHES["constant"])
    root = cache.register(0, (1, 2), block=5, depth=2, parent_serial=None)
    assert cache.match([(1, 2)], [0]) == [root]
    assert cache.match([(1, 3)], [0]) == []                   # same hash, other tokens
    child = cache.register(1, (3, 4), block=6, depth=4, parent_serial=root.serial)
    assert cache.match([(1, 2), (3, 4)], [0, 1]) == [root, child]
    assert cache.match([(1, 3), (3, 4)], [0, 1]) == []         # stops at the first miss
    orphan = cache.register(2, (5, 6), block=7, depth=4, parent_serial=None)
    assert cache.match([(1, 2), (5, 6)], [0, 2]) == [root]     # its parent is not root
    assert orphan is not None
    assert cache.register(0, (7, 7), block=8, depth=2, parent_serial=None) is None


OPS = st.lists(st.tuples(st.sampled_from(["alloc", "append", "fork", "free"]),
                         st.integers(0, 2**40), st.integers(1, 12)), max_size=60)


@settings(max_examples=max(60, settings.default.max_examples))
@given(kind=st.sampled_from(sorted(BAD_HASHES)), block_size=st.integers(1, 4), ops=OPS)
def test_colliding_hashes_never_share_wrong_kv(kind, block_size, ops):
    bm = BlockManager(block_size, 12, 0, hash_fn=BAD_HASHES[kind])
    kv: dict[int, list] = {}           # gpu block -> context of each slot
    live: dict[int, Sequence] = {}
    covered: dict[int, int] = {}       # tokens with KV written, per sequence
    bs = block_size

    def write(s: Sequence, start: int) -> None:
        table, toks = bm.get_block_table(s), s.token_ids
        for t in range(start, len(toks)):
            kv.setdefault(table[t // bs], [None] * bs)[t % bs] = tuple(toks[:t + 1])
        covered[s.seq_id] = len(toks)

    for i, (op, pattern, n) in enumerate(ops):
        toks = [(pattern >> (2 * (j % 20))) & 1 for j in range(n)]   # two letters
        ids = sorted(live)
        if op == "alloc":
            s = Sequence(i, toks)
            if bm.can_allocate(s) is AllocStatus.OK:
                bm.allocate(s)
                live[i] = s
                write(s, bm.get_num_cached_tokens(s))
        elif ids:
            s = live[ids[pattern % len(ids)]]
            if op == "free":
                bm.free(s)
                del live[s.seq_id]
            elif op == "fork":
                child = s.fork(i)
                bm.fork(s, child)
                live[i], covered[i] = child, covered[s.seq_id]
            else:
                for t in toks[:3]:
                    s.append_token_id(t)
                if bm.can_append_slots(s):
                    for src, dst in bm.append_slots(s):
                        kv[dst] = list(kv[src])
                    write(s, covered[s.seq_id])
                else:
                    bm.free(s)
                    del live[s.seq_id]
        for s in live.values():        # every slot holds KV of its own context
            table = bm.get_block_table(s)
            for t in range(covered[s.seq_id]):
                assert kv[table[t // bs]][t % bs] == tuple(s.token_ids[:t + 1]), (s, t)
