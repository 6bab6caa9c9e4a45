"""Swapping whole sequences: their block tables between the GPU and CPU pools. No torch.

engine/core/block/swap_space.py moves one table's blocks and remembers the
copies; this is the sequence level above it: which table, whether it is on the
side it leaves, what a group costs (a block its sequences share is copied once),
whether the destination has room, and re-registering the blocks that come back
to the GPU in the prefix cache.
"""
from __future__ import annotations

from engine.core.block.allocator import BlockPool, NoFreeBlocksError
from engine.core.block.block_table import BlockTable, gpu_table_of, table_of
from engine.core.block.prefix_cache import PrefixChains
from engine.core.block.swap_space import SwapSpace
from engine.core.sequence import Sequence


class SequenceSwapper:
    """Swaps over a block manager's tables, GPU pool, swap space and chains
    (shared with it, none owned)."""

    def __init__(self, tables: dict[int, BlockTable], gpu: BlockPool, swap: SwapSpace,
                 prefix: PrefixChains) -> None:
        self._tables = tables
        self._gpu = gpu
        self._cpu = swap.cpu
        self._swap = swap
        self._prefix = prefix

    def out_cost(self, seqs: list[Sequence] | tuple[Sequence, ...]) -> int:
        """BlockManager.swap_out_cost."""
        blocks: dict[int, None] = {}
        for seq in seqs:
            table = gpu_table_of(self._tables, seq.seq_id, "swap_out")
            blocks.update(dict.fromkeys(table.blocks))
        return self._swap.out_cost(list(blocks))

    def in_cost(self, seqs: list[Sequence] | tuple[Sequence, ...]) -> int:
        """BlockManager.swap_in_cost."""
        blocks: dict[int, None] = {}
        for seq in seqs:
            table = table_of(self._tables, seq.seq_id)
            if table.on_gpu:
                raise ValueError(f"swap_in_cost: sequence {seq.seq_id} is not swapped out")
            blocks.update(dict.fromkeys(table.blocks))
        return self._swap.in_cost(list(blocks))

    def swap_out(self, seq: Sequence) -> dict[int, int]:
        """BlockManager.swap_out."""
        table = gpu_table_of(self._tables, seq.seq_id, "swap_out")
        needed = self._swap.out_cost(table.blocks)
        if needed > self._cpu.num_free:
            raise NoFreeBlocksError("cpu", needed, self._cpu.num_free)
        return self._swap.move(table, self._gpu, to_gpu=False)

    def swap_in(self, seq: Sequence) -> dict[int, int]:
        """BlockManager.swap_in."""
        table = table_of(self._tables, seq.seq_id)
        if table.on_gpu:
            raise ValueError(f"swap_in: sequence {seq.seq_id} is not swapped out")
        needed = self._swap.in_cost(table.blocks)
        if needed > self._gpu.num_free:
            raise NoFreeBlocksError("gpu", needed, self._gpu.num_free)
        mapping = self._swap.move(table, self._gpu, to_gpu=True)
        self._prefix.extend(table, seq.token_ids)
        return mapping
