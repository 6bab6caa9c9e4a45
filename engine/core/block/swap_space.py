"""The CPU side of swapping: the CPU block pool and the remembered copies. No torch.

A swap moves a whole block table between the GPU pool and the CPU pool. Blocks
shared by several sequences are copied once: the first holder's copy is
remembered (engine/core/block/swap_links.py) and later holders take a reference to it,
until either block is released or the source is written.
"""
from __future__ import annotations

from engine.core.block.block_allocator import BlockAllocator
from engine.core.block.block_table import BlockTable
from engine.core.block.gpu_pool import GpuPool
from engine.core.block.swap_links import SwapLinks


class SwapSpace:
    def __init__(self, num_cpu_blocks: int) -> None:
        self.cpu = BlockAllocator(num_cpu_blocks, "cpu")
        self._out = SwapLinks()   # gpu block -> its cpu copy
        self._in = SwapLinks()    # cpu block -> its gpu copy

    def out_cost(self, blocks: list[int]) -> int:
        """CPU blocks a swap-out of `blocks` allocates (those without a live copy)."""
        return self._out.cost(blocks)

    def in_cost(self, blocks: list[int]) -> int:
        """GPU blocks a swap-in of `blocks` allocates."""
        return self._in.cost(blocks)

    @property
    def has_gpu_links(self) -> bool:
        """Whether any GPU block is the source or the copy of a remembered swap."""
        return bool(self._out.fwd or self._in.rev)

    def move(self, table: BlockTable, gpu: GpuPool, to_gpu: bool) -> dict[int, int]:
        """Swap a whole table; returns {source block: destination block} to copy
        (a copy another holder already made is shared, not listed)."""
        if to_gpu:
            links, dst_alloc, drop = self._in, gpu, self.drop_cpu
        else:
            links, dst_alloc, drop = self._out, self.cpu, gpu.drop
        dst_blocks, mapping = links.targets(table.blocks, dst_alloc)
        for src, dst in zip(reversed(table.blocks), reversed(dst_blocks)):
            if drop(src):                  # deepest first, as in free
                links.link(src, dst)       # other holders may reuse this copy
        table.move(dst_blocks, on_gpu=to_gpu)
        return mapping

    def forget_gpu_copies(self, block: int) -> None:
        """The GPU block is released or rewritten: copies of it, or that it
        holds, are no longer interchangeable with it."""
        if self._out:
            self._out.forget_src(block)
        if self._in:
            self._in.forget_dst(block)

    def drop_cpu(self, block: int) -> int:
        """One holder lets go of a CPU block; returns the references left."""
        refs = self.cpu.decref(block)
        if refs == 0:
            self._out.forget_dst(block)
            self._in.forget_src(block)
            self.cpu.release(block)
        return refs
