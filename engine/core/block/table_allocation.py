"""New block tables: a sequence's cached prefix blocks reused, fresh ones for the rest. No torch.

allocate covers all of seq.token_ids (a prompt, or prompt + outputs after a
recompute) at once. Prefix-cache hits (engine/core/block/prefix_cache.py) cost
nothing when another sequence holds the block and one free block when it is
evictable (it stops being free); the other blocks are fresh.
"""
from __future__ import annotations

from engine.core.block.allocator import BlockPool, NoFreeBlocksError
from engine.core.block.block_table import BlockTable
from engine.core.block.prefix_cache import CacheEntry, PrefixChains
from engine.core.kv_memory import cdiv
from engine.core.sequence import Sequence

Lookup = tuple[list[int], list[CacheEntry]]    # (chained hashes, entries hit)


class TableAllocator:
    """Allocation over a block manager's tables, GPU pool and chains (shared, not owned)."""

    def __init__(self, tables: dict[int, BlockTable], gpu: BlockPool, prefix: PrefixChains,
                 block_size: int) -> None:
        self._tables = tables
        self._gpu = gpu
        self._prefix = prefix
        self._bs = block_size

    def cost(self, seqs: list[Sequence] | tuple[Sequence, ...]
             ) -> tuple[list[Lookup], int, int, int]:
        """(prefix lookups, fresh blocks, evictable blocks hit, blocks) of allocating seqs."""
        lookups, fresh, blocks, parked = [], 0, 0, set()
        refs = self._gpu.refs
        for seq in seqs:
            hashes, hits = self._prefix.lookup(seq)
            own = cdiv(len(seq.token_ids), self._bs)
            blocks += own
            fresh += own - len(hits)
            parked.update(entry.block for entry in hits if not refs[entry.block])
            lookups.append((hashes, hits))
        return lookups, fresh, len(parked), blocks

    def allocate(self, seqs: list[Sequence] | tuple[Sequence, ...]) -> None:
        """BlockManager.allocate_all."""
        for seq in seqs:
            if seq.seq_id in self._tables:
                raise ValueError(f"allocate: sequence {seq.seq_id} already has a block table")
        lookups, fresh, parked, _ = self.cost(seqs)
        gpu, bs = self._gpu, self._bs
        available = gpu.num_free - parked
        if fresh > available:
            raise NoFreeBlocksError("gpu", fresh, available)
        for _, hits in lookups:
            for entry in hits:
                gpu.acquire(entry.block)
        for seq, (hashes, hits) in zip(seqs, lookups):
            tokens = seq.token_ids
            blocks = [entry.block for entry in hits]
            blocks += [gpu.allocate() for _ in range(cdiv(len(tokens), bs) - len(hits))]
            table = BlockTable(blocks, len(tokens), True, bs, list(hashes), len(hits),
                               len(hits) * bs)
            table.own_slots = table.capacity            # the last block is fresh
            self._tables[seq.seq_id] = table
            self._prefix.extend(table, tokens)
