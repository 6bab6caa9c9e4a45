"""Free pool and reference counts of one device's KV blocks. No torch.

The allocator only knows "free" (in the pool) and "held" (ref count > 0). A GPU
block whose count drops to 0 but whose KV is worth keeping (a prefix-cache
entry) is parked outside the pool by the block manager and comes back through
`claim`; the allocator itself has no policy.
"""
from __future__ import annotations


class NoFreeBlocksError(RuntimeError):
    """Raised when an allocation needs more blocks than a device has free."""

    def __init__(self, device: str, needed: int, available: int) -> None:
        super().__init__(
            f"no free {device.upper()} blocks: need {needed}, {available} free "
            f"(free counts evictable prefix-cache blocks)")
        self.device = device
        self.needed = needed
        self.available = available


class BlockAllocator:
    """Blocks 0..num_blocks-1 of one device. The pool is a stack, so a block
    just released is the next one handed out (deterministic block ids)."""

    def __init__(self, num_blocks: int, device: str) -> None:
        if not isinstance(num_blocks, int) or num_blocks < 0:
            raise ValueError(f"num_blocks must be an int >= 0, got {num_blocks!r}")
        self.device = device
        self.num_blocks = num_blocks
        # Public for hot paths that read a count without a call; never write it.
        self.refs = [0] * num_blocks
        # Reversed so that a fresh allocator hands out block 0 first.
        self._pool = list(range(num_blocks - 1, -1, -1))

    @property
    def num_free(self) -> int:
        """Blocks in the pool (not counting parked cache blocks)."""
        return len(self._pool)

    def allocate(self) -> int:
        if not self._pool:
            raise NoFreeBlocksError(self.device, 1, 0)
        block = self._pool.pop()
        self.refs[block] = 1
        return block

    def claim(self, block: int) -> None:
        """Take a parked block (ref 0, outside the pool) back into use."""
        if self.refs[block] != 0:
            raise ValueError(f"claim: {self.device} block {block} is held "
                             f"(ref count {self.refs[block]})")
        self.refs[block] = 1

    def acquire(self, block: int) -> bool:
        """One more reference to a held or parked block; True if it was parked."""
        refs = self.refs[block]
        self.refs[block] = refs + 1
        return refs == 0

    def count_held(self, blocks: list[int]) -> int:
        refs = self.refs
        return sum(1 for b in blocks if refs[b])

    def incref(self, block: int) -> None:
        if self.refs[block] <= 0:
            raise ValueError(f"incref: {self.device} block {block} is not held")
        self.refs[block] += 1

    def decref(self, block: int) -> int:
        """Drop one reference; returns the count left. At 0 the caller must
        `release` the block or park it."""
        refs = self.refs[block] - 1
        if refs < 0:
            raise ValueError(f"decref: {self.device} block {block} is not held")
        self.refs[block] = refs
        return refs

    def release(self, block: int) -> None:
        """Return a block with ref count 0 to the pool."""
        if self.refs[block] != 0:
            raise ValueError(f"release: {self.device} block {block} is still held "
                             f"(ref count {self.refs[block]})")
        self._pool.append(block)

    def ref_count(self, block: int) -> int:
        if not 0 <= block < self.num_blocks:
            raise ValueError(f"block {block} is out of range for {self.num_blocks} "
                             f"{self.device} blocks")
        return self.refs[block]
