"""One device's KV blocks: the free pool and the reference counts. No torch.

Reference counting has one pair of verbs: `acquire` (one more holder) and
`release` (one fewer). `allocate` takes a block with no holder. A block whose
last holder releases it goes back to the pool, or, on the GPU when it is a
prefix-cache entry, is parked in the cache (still cached, evictable); both count
as free. Allocation takes the pool first and evicts the least recently parked
entry only when the pool is empty, so cached KV lives as long as it can.
"""
from __future__ import annotations

from typing import Callable, Optional

from engine.core.block.prefix_cache import PrefixCache


class NoFreeBlocksError(RuntimeError):
    """Raised when an allocation needs more blocks than a device has free."""

    def __init__(self, device: str, needed: int, available: int) -> None:
        super().__init__(
            f"no free {device.upper()} blocks: need {needed}, {available} free "
            f"(free counts evictable prefix-cache blocks)")
        self.device = device
        self.needed = needed
        self.available = available


def _nothing(block: int) -> None:
    return None


class BlockPool:
    """Blocks 0..size-1 of one device. The pool is a stack, so a block just
    released is the next one handed out (deterministic block ids).

    cache: the prefix cache whose entries park here at ref count 0 (GPU only).
    on_release: called with a block whose last holder let go (its contents stop
        mattering to anyone but the cache), before it is pooled or parked.
    """

    def __init__(self, size: int, device: str, cache: Optional[PrefixCache] = None,
                 on_release: Callable[[int], None] = _nothing) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"size must be an int >= 0, got {size!r}")
        self.device = device
        self.size = size
        # Public for hot paths that read a count without a call; never write it.
        self.refs = [0] * size
        self._cache = cache
        self._on_release = on_release
        # Reversed so that a fresh pool hands out block 0 first.
        self._pool = list(range(size - 1, -1, -1))

    @property
    def num_free(self) -> int:
        """Pooled blocks plus parked (evictable) cache blocks."""
        cache = self._cache
        return len(self._pool) + (cache.num_evictable if cache else 0)

    def allocate(self) -> int:
        """A block with no holder (pooled, else the oldest parked one, evicted)."""
        if self._pool:
            block = self._pool.pop()
        else:
            cache = self._cache
            if cache is None or not cache.num_evictable:
                raise NoFreeBlocksError(self.device, 1, 0)
            block = cache.evict()
        self.refs[block] = 1
        return block

    def acquire(self, block: int) -> None:
        """One more holder of a held block, or of a parked cache block (unparked)."""
        refs = self.refs[block]
        if refs == 0:
            cache = self._cache
            if cache is None or cache.entry_of(block) is None:
                raise ValueError(f"acquire: {self.device} block {block} is free, "
                                 f"neither held nor cached")
            cache.unpark(block)
        self.refs[block] = refs + 1

    def release(self, block: int) -> int:
        """One holder fewer; at none the block is parked or pooled. Returns the
        holders left."""
        refs = self.refs[block] - 1
        if refs < 0:
            raise ValueError(f"release: {self.device} block {block} is not held")
        self.refs[block] = refs
        if refs == 0:
            self._on_release(block)
            cache = self._cache
            if cache is not None and cache.entry_of(block) is not None:
                cache.park(block)
            else:
                self._pool.append(block)
        return refs

    def ref_count(self, block: int) -> int:
        if isinstance(block, bool) or not isinstance(block, int) or not 0 <= block < self.size:
            raise ValueError(f"block {block!r} is out of range for {self.size} "
                             f"{self.device} blocks")
        return self.refs[block]

    def count_held(self, blocks: list[int]) -> int:
        refs = self.refs
        return sum(1 for b in blocks if refs[b])
