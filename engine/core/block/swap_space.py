"""The CPU side of swapping: the CPU block pool and the remembered copies. No torch.

A swap moves a whole block table between the GPU pool and the CPU pool. Blocks
shared by several sequences are copied once: when one holder of a shared block
swaps out (or in), its copy is remembered as a link src -> dst, and a later
holder of the same src takes a reference to dst instead of copying again. A link
is only true while both blocks are alive and src is unchanged, so it is
forgotten when either block is released or src is written.
"""
from __future__ import annotations

from engine.core.block.allocator import BlockPool
from engine.core.block.block_table import BlockTable


class SwapLinks:
    """Remembered copies of one direction: fwd[src] = dst, rev[dst] = src."""

    __slots__ = ("fwd", "rev")   # read them freely, change them through the methods

    def __init__(self) -> None:
        self.fwd: dict[int, int] = {}
        self.rev: dict[int, int] = {}

    def __bool__(self) -> bool:
        return bool(self.fwd)

    def cost(self, blocks: list[int]) -> int:
        """Blocks a swap of `blocks` must allocate (those without a copy)."""
        fwd = self.fwd
        return sum(1 for b in blocks if b not in fwd)

    def targets(self, blocks: list[int], dst_pool: BlockPool) -> tuple[list[int], dict[int, int]]:
        """Destination of each block: an existing copy gets one more holder;
        the others are allocated and listed to be copied."""
        dst_blocks, mapping = [], {}
        for src in blocks:
            dst = self.fwd.get(src)
            if dst is None:
                dst = mapping[src] = dst_pool.allocate()
            else:
                dst_pool.acquire(dst)
            dst_blocks.append(dst)
        return dst_blocks, mapping

    def link(self, src: int, dst: int) -> None:
        old = self.fwd.get(src)
        if old is not None and old != dst:
            del self.rev[old]
        self.fwd[src] = dst
        self.rev[dst] = src

    def forget_src(self, src: int) -> None:
        dst = self.fwd.pop(src, None)
        if dst is not None:
            del self.rev[dst]

    def forget_dst(self, dst: int) -> None:
        src = self.rev.pop(dst, None)
        if src is not None:
            del self.fwd[src]


class SwapSpace:
    def __init__(self, num_cpu_blocks: int) -> None:
        self.cpu = BlockPool(num_cpu_blocks, "cpu", on_release=self._forget_cpu_copies)
        self.out_links = SwapLinks()   # gpu block -> its cpu copy
        self.in_links = SwapLinks()    # cpu block -> its gpu copy

    def out_cost(self, blocks: list[int]) -> int:
        """CPU blocks a swap-out of `blocks` allocates (those without a live copy)."""
        return self.out_links.cost(blocks)

    def in_cost(self, blocks: list[int]) -> int:
        """GPU blocks a swap-in of `blocks` allocates."""
        return self.in_links.cost(blocks)

    def move(self, table: BlockTable, gpu: BlockPool, to_gpu: bool) -> dict[int, int]:
        """Swap a whole table; returns {source block: destination block} to copy
        (a copy another holder already made is shared, not listed)."""
        if to_gpu:
            links, src_pool, dst_pool = self.in_links, self.cpu, gpu
        else:
            links, src_pool, dst_pool = self.out_links, gpu, self.cpu
        dst_blocks, mapping = links.targets(table.blocks, dst_pool)
        for src, dst in zip(reversed(table.blocks), reversed(dst_blocks)):
            if src_pool.release(src):      # deepest first, as in free
                links.link(src, dst)       # other holders may reuse this copy
        table.move(dst_blocks, on_gpu=to_gpu)
        return mapping

    def forget_gpu_copies(self, block: int) -> None:
        """The GPU block is released or rewritten: copies of it, or that it
        holds, are no longer interchangeable with it."""
        if self.out_links:
            self.out_links.forget_src(block)
        if self.in_links:
            self.in_links.forget_dst(block)

    def _forget_cpu_copies(self, block: int) -> None:
        self.out_links.forget_dst(block)
        self.in_links.forget_src(block)
