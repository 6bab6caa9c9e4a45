"""Remembered swap copies, so a block shared by several sequences is copied once.

When one holder of a shared block swaps out (or in), its copy is recorded as
src -> dst. A later holder of the same src reuses dst instead of copying again.
A link is only true while both blocks are alive and src is unchanged, so the
block manager forgets it when either block is released or src is written.
"""
from __future__ import annotations


class SwapLinks:
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

    def targets(self, blocks: list[int], dst_alloc) -> tuple[list[int], dict[int, int]]:
        """Destination of each block: an existing copy gets one more reference
        (dst_alloc.incref); the others are allocated (dst_alloc.allocate) and
        listed to be copied."""
        dst_blocks, mapping = [], {}
        for src in blocks:
            dst = self.fwd.get(src)
            if dst is None:
                dst = mapping[src] = dst_alloc.allocate()
            else:
                dst_alloc.incref(dst)
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
