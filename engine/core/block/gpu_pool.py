"""The GPU's blocks: the allocator plus the prefix cache's parked blocks. No torch.

A block whose last holder lets go goes back to the pool, or, when it is a
prefix-cache entry, is parked (still cached, evictable). Both count as free.
Allocation takes the pool first and evicts the least recently parked entry
only when the pool is empty, so cached KV lives as long as it can.
"""
from __future__ import annotations

from typing import Callable, Optional

from engine.core.block.block_allocator import BlockAllocator, NoFreeBlocksError
from engine.core.block.prefix_cache import PrefixCache


class GpuPool:
    def __init__(self, num_blocks: int, cache: Optional[PrefixCache],
                 on_release: Callable[[int], None]) -> None:
        self._alloc = BlockAllocator(num_blocks, "gpu")
        self.refs = self._alloc.refs       # read-only view, for hot paths
        self._cache = cache
        self._on_release = on_release      # a block's contents stop mattering
        self.num_blocks = num_blocks

    @property
    def num_free(self) -> int:
        cache = self._cache
        return self._alloc.num_free + (cache.num_evictable if cache else 0)

    def allocate(self) -> int:
        if self._alloc.num_free:
            return self._alloc.allocate()
        cache = self._cache
        if cache is None or not cache.num_evictable:
            raise NoFreeBlocksError("gpu", 1, 0)
        block = cache.evict()
        self._alloc.claim(block)
        return block

    def acquire(self, block: int) -> None:
        """One more holder of a cached block, held or parked."""
        if self._alloc.acquire(block):
            self._cache.unpark(block)

    def incref(self, block: int) -> None:
        self._alloc.incref(block)

    def drop(self, block: int) -> int:
        """One holder fewer; at none the block is parked or pooled. Returns the
        holders left."""
        refs = self._alloc.decref(block)
        if refs == 0:
            self._on_release(block)
            cache = self._cache
            if cache is not None and cache.entry_of(block) is not None:
                cache.park(block)
            else:
                self._alloc.release(block)
        return refs

    def ref_count(self, block: int) -> int:
        return self._alloc.ref_count(block)

    def count_held(self, blocks: list[int]) -> int:
        return self._alloc.count_held(blocks)
