"""Prefix cache of full GPU blocks, keyed by a chained hash, and the chains of
block tables over it. No torch.

An entry says: GPU block `block` holds the KV of `tokens`, the block at depth
`depth` (tokens hashed so far) of a chain whose previous block is the entry
numbered `parent_serial`. Every entry gets a serial number that is never reused;
a lookup must name the serial of the entry it matched one block earlier and must
bring equal token ids, so neither a hash collision nor an entry that was evicted
and replaced can hand out KV computed for other tokens.

Entries whose block no sequence holds are evictable: least recently released
first. The block manager releases a sequence's blocks deepest first, so among
blocks released together the one holding more hashed tokens goes first and a
chain is evicted from its tail, never leaving a child without its parent.

Chains (PrefixChains): hits stop at the first miss and never include the block
of the last token (it is computed again). A block is registered only on top of
its parent entry; the first block that cannot be (its hash names another block:
a duplicate or a collision) closes the table's chain, so later blocks stay
private too.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Iterator, Optional

from engine.core.block.block_table import BlockTable
from engine.core.sequence import Sequence

HashFn = Callable[[Optional[int], tuple], int]


def default_block_hash(parent_hash: Optional[int], tokens: tuple) -> int:
    """Chained hash of one full block: its parent's hash and its token ids."""
    return hash((parent_hash, tokens))


class CacheEntry:
    __slots__ = ("hash", "tokens", "block", "depth", "serial", "parent_serial")

    def __init__(self, block_hash: int, tokens: tuple, block: int, depth: int,
                 serial: int, parent_serial: Optional[int]) -> None:
        self.hash = block_hash
        self.tokens = tokens
        self.block = block
        self.depth = depth
        self.serial = serial
        self.parent_serial = parent_serial


class PrefixCache:
    """Hash -> entry, block -> entry, and the LRU of evictable blocks."""

    def __init__(self, hash_fn: HashFn = default_block_hash) -> None:
        if not callable(hash_fn):
            raise ValueError(f"hash_fn must be callable, got {hash_fn!r}")
        self.hash_fn = hash_fn
        self._by_hash: dict[int, CacheEntry] = {}
        self._by_block: dict[int, CacheEntry] = {}
        self._evictable: OrderedDict[int, None] = OrderedDict()
        self._next_serial = 0

    def __len__(self) -> int:
        return len(self._by_block)

    @property
    def num_evictable(self) -> int:
        return len(self._evictable)

    def match(self, chunks: list[tuple], hashes: list[int]) -> list[CacheEntry]:
        """Entries for the leading blocks of a chain, up to the first miss."""
        by_hash, hits, parent_serial = self._by_hash, [], None
        for chunk, block_hash in zip(chunks, hashes):
            entry = by_hash.get(block_hash)
            if (entry is None or entry.parent_serial != parent_serial
                    or entry.tokens != chunk):
                break
            hits.append(entry)
            parent_serial = entry.serial
        return hits

    def entry_of(self, block: int) -> Optional[CacheEntry]:
        return self._by_block.get(block)

    def register(self, block_hash: int, tokens: tuple, block: int, depth: int,
                 parent_serial: Optional[int]) -> Optional[CacheEntry]:
        """Make `block` the entry for `block_hash`. Returns None when the hash
        already names another block (a duplicate or a collision): the first
        entry stays and the caller keeps its own block uncached."""
        entry = self._by_hash.get(block_hash)
        if entry is not None:
            return entry if entry.block == block else None
        if block in self._by_block:
            raise ValueError(f"block {block} is already a prefix-cache entry")
        entry = CacheEntry(block_hash, tokens, block, depth, self._next_serial,
                           parent_serial)
        self._next_serial += 1
        self._by_hash[block_hash] = entry
        self._by_block[block] = entry
        return entry

    def park(self, block: int) -> None:
        """The last holder released `block`; it stays cached, evictable."""
        self._evictable[block] = None

    def unpark(self, block: int) -> None:
        """A lookup hit an evictable block; it is held again."""
        del self._evictable[block]

    def evict(self) -> int:
        """Drop the least recently released entry; returns its block."""
        if not self._evictable:
            raise ValueError("evict: no evictable prefix-cache block")
        block, _ = self._evictable.popitem(last=False)
        entry = self._by_block.pop(block)
        del self._by_hash[entry.hash]
        return block

    def entries(self) -> Iterator[CacheEntry]:
        return iter(self._by_block.values())

    def evictable_blocks(self) -> list[int]:
        """Evictable blocks, the next to be evicted first."""
        return list(self._evictable)


class PrefixChains:
    """Lookups and registration over a PrefixCache (or none: caching off)."""

    def __init__(self, cache: Optional[PrefixCache], block_size: int) -> None:
        self._cache = cache
        self._bs = block_size
        self._memo: Optional[tuple] = None   # see chunks

    def chunks(self, seq: Sequence) -> tuple[list[tuple], list[int]]:
        """Token tuples and chained hashes of the blocks a prompt may reuse.
        Remembered for the last sequence asked about: the scheduler asks
        can_allocate, get_num_cached_tokens and allocate in a row. Token lists
        only grow, so the same object with the same length has the same tokens."""
        tokens = seq.token_ids
        memo = self._memo
        if memo is not None and memo[0] is seq and memo[1] == len(tokens):
            return memo[2], memo[3]
        bs, hash_fn = self._bs, self._cache.hash_fn
        chunks = [tuple(tokens[i:i + bs]) for i in range(0, (len(tokens) - 1) // bs * bs, bs)]
        hashes, parent = [], None
        if hash_fn is default_block_hash:      # the same hash, without a call per block
            for chunk in chunks:
                parent = hash((parent, chunk))
                hashes.append(parent)
        else:
            for chunk in chunks:
                parent = hash_fn(parent, chunk)
                hashes.append(parent)
        self._memo = (seq, len(tokens), chunks, hashes)
        return chunks, hashes

    def lookup(self, seq: Sequence) -> tuple[list[int], list[CacheEntry]]:
        """(chained hashes of the leading full blocks, the cache entries hit).
        The hashes list is the memo's own (see chunks): copy it to keep or change it."""
        if self._cache is None:
            return [], []
        chunks, hashes = self.chunks(seq)
        return hashes, self._cache.match(chunks, hashes)

    def extend(self, table: BlockTable, tokens: list[int]) -> None:
        """Register the table's newly full blocks, each on top of its parent."""
        cache, bs = self._cache, self._bs
        if cache is None:
            return
        full = table.num_tokens // bs
        hashes, blocks = table.hashes, table.blocks
        while table.chain_open and table.num_chained < full:
            j = table.num_chained
            chunk = tuple(tokens[j * bs:(j + 1) * bs])
            if j < len(hashes):
                block_hash = hashes[j]
            else:
                block_hash = cache.hash_fn(hashes[j - 1] if j else None, chunk)
                hashes.append(block_hash)
            parent = cache.entry_of(blocks[j - 1]).serial if j else None
            if cache.register(block_hash, chunk, blocks[j], (j + 1) * bs, parent) is None:
                table.chain_open = False
            else:
                table.num_chained = j + 1
