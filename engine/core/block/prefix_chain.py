"""Prefix caching for block tables: which leading blocks of a prompt are cached,
and registering a table's blocks as they fill. No torch.

Hits stop at the first miss and never include the block of the last token (it
is computed again). A block is registered only on top of its parent entry; the
first block that cannot be (its hash names another block: a duplicate or a
collision) closes the table's chain, so later blocks stay private too.
"""
from __future__ import annotations

from typing import Optional

from engine.core.block.block_table import BlockTable
from engine.core.block.prefix_cache import CacheEntry, PrefixCache, default_block_hash
from engine.core.sequence import Sequence


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
