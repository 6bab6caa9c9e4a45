"""Block manager: block tables, prefix caching, copy-on-write and swap. No torch.

The scheduler's one view of KV blocks. Its parts share its tables and pools:
table_allocation.py (allocate), slot_append.py (append_slots, copy-on-write),
sequence_swap.py over swap_space.py (swaps; a shared block is copied once),
allocator.py (pools, reference counts), prefix_cache.py (hits, duplicates).

Choices:
- Tables are keyed by `seq.seq_id`. `free` of a sequence without a table is a
  no-op (abort paths may free twice); the other per-sequence calls raise
  `UnknownSequenceError` (a ValueError).
- A block is registered in the prefix cache when it becomes full (allocate,
  append_slots, swap_in), before its KV is computed: the caller must not let
  another sequence read it before the step that writes it.
- swap_out leaves the GPU copies it releases in the prefix cache (their KV is
  unchanged); swap_in takes fresh GPU blocks and registers them where no entry
  has their hash yet.
- can_allocate and can_swap_in keep `watermark_blocks` free; appends may use
  the last blocks.
"""
from __future__ import annotations

import enum
from typing import Optional

from engine.core.block.allocator import BlockPool, NoFreeBlocksError
from engine.core.block.block_table import (BlockTable, UnknownSequenceError, gpu_table_of,
                                           table_of)
from engine.core.block.prefix_cache import HashFn, PrefixCache, PrefixChains, default_block_hash
from engine.core.block.sequence_swap import SequenceSwapper
from engine.core.block.slot_append import SlotAppender
from engine.core.block.swap_space import SwapSpace
from engine.core.block.table_allocation import TableAllocator
from engine.core.sequence import Sequence

__all__ = ["AllocStatus", "BlockManager", "NoFreeBlocksError", "UnknownSequenceError"]


class AllocStatus(enum.Enum):
    OK = "ok"          # can allocate now
    LATER = "later"    # not enough free blocks now
    NEVER = "never"    # more blocks than the GPU has (less the watermark)


class BlockManager:
    def __init__(self, block_size: int = 16, num_gpu_blocks: int = 64,
                 num_cpu_blocks: int = 64, enable_prefix_caching: bool = True,
                 watermark: float = 0.01, hash_fn: HashFn = default_block_hash) -> None:
        for name, value, low in (("block_size", block_size, 1),
                                 ("num_gpu_blocks", num_gpu_blocks, 1),
                                 ("num_cpu_blocks", num_cpu_blocks, 0)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if not 0.0 <= watermark < 1.0:
            raise ValueError(f"watermark must be in [0, 1), got {watermark!r}")
        self.block_size = block_size
        self.num_total_gpu_blocks = num_gpu_blocks
        self.num_total_cpu_blocks = num_cpu_blocks
        self.enable_prefix_caching = enable_prefix_caching
        self.watermark_blocks = int(watermark * num_gpu_blocks)
        self._cache: Optional[PrefixCache] = (
            PrefixCache(hash_fn) if enable_prefix_caching else None)
        self._swap = SwapSpace(num_cpu_blocks)
        self._gpu = BlockPool(num_gpu_blocks, "gpu", self._cache, self._swap.forget_gpu_copies)
        self._cpu = self._swap.cpu
        self._prefix = PrefixChains(self._cache, block_size)
        self._tables: dict[int, BlockTable] = {}
        self._alloc = TableAllocator(self._tables, self._gpu, self._prefix, block_size)
        self._append = SlotAppender(self._tables, self._gpu, self._swap, self._prefix,
                                    block_size, enable_prefix_caching)
        self._swapper = SequenceSwapper(self._tables, self._gpu, self._swap, self._prefix)

    # ---- counts -------------------------------------------------------------
    @property
    def num_free_gpu_blocks(self) -> int:
        """Pool blocks plus cached blocks that no sequence holds (evictable)."""
        return self._gpu.num_free

    @property
    def max_allocatable_blocks(self) -> int:
        """Most GPU blocks sequences allocated at once may take (can_allocate and
        can_allocate_all answer NEVER beyond it): all but the watermark."""
        return self.num_total_gpu_blocks - self.watermark_blocks

    @property
    def num_free_cpu_blocks(self) -> int:
        return self._cpu.num_free

    # ---- queries ------------------------------------------------------------
    def has_seq(self, seq: Sequence) -> bool:
        return seq.seq_id in self._tables

    def is_on_gpu(self, seq: Sequence) -> bool:
        return table_of(self._tables, seq.seq_id).on_gpu

    def get_block_table(self, seq: Sequence) -> list[int]:
        return list(table_of(self._tables, seq.seq_id).blocks)

    def num_blocks_of(self, seq: Sequence) -> int:
        """len(get_block_table(seq)), without the copy."""
        return len(table_of(self._tables, seq.seq_id).blocks)

    def get_num_cached_tokens(self, seq: Sequence) -> int:
        """Tokens of reused prefix-cache blocks. For a sequence without a table:
        the tokens that allocating it now would reuse."""
        table = self._tables.get(seq.seq_id)
        if table is not None:
            return table.num_cached_tokens
        return len(self._prefix.lookup(seq)[1]) * self.block_size

    def ref_count(self, block: int, device: str = "gpu") -> int:
        pool = {"gpu": self._gpu, "cpu": self._cpu}.get(device)
        if pool is None:
            raise ValueError(f"device must be 'gpu' or 'cpu', got {device!r}")
        return pool.ref_count(block)

    def cache_entries(self) -> list[tuple[int, int, tuple, int]]:
        """(block, hash, token ids, depth) of every prefix-cache entry."""
        entries = self._cache.entries() if self._cache else ()
        return [(e.block, e.hash, e.tokens, e.depth) for e in entries]

    def evictable_blocks(self) -> list[int]:
        """Cached blocks no sequence holds, the next to be evicted first."""
        return self._cache.evictable_blocks() if self._cache else []

    # ---- allocate -------------------------------------------------------------
    def can_allocate(self, seq: Sequence) -> AllocStatus:
        return self.can_allocate_all((seq,))

    def allocate(self, seq: Sequence) -> None:
        """Build the table for all of seq.token_ids (prompt, plus the generated
        tokens of a recomputed sequence), reusing cached full blocks."""
        self.allocate_all((seq,))

    def can_allocate_all(self, seqs: list[Sequence] | tuple[Sequence, ...]) -> AllocStatus:
        """Whether allocate_all(seqs) fits now (OK), later (LATER), or never: more
        blocks than the GPU less the watermark (NEVER)."""
        fresh, parked, blocks = self._alloc.cost(seqs)[1:]
        if blocks > self.max_allocatable_blocks:
            return AllocStatus.NEVER
        # Hits on held blocks cost nothing; hits on evictable ones use a free block.
        if self.num_free_gpu_blocks - fresh - parked >= self.watermark_blocks:
            return AllocStatus.OK
        return AllocStatus.LATER

    def allocate_all(self, seqs: list[Sequence] | tuple[Sequence, ...]) -> None:
        """allocate each of seqs (a group re-admitted after recompute), their
        prefix-cache hits all taken before any fresh block, so that no fresh
        block evicts what another of them hit."""
        self._alloc.allocate(seqs)

    # ---- append / copy-on-write ------------------------------------------------
    def append_cost(self, seqs: list[Sequence] | tuple[Sequence, ...]) -> int:
        """Free GPU blocks that append_slots of each of `seqs`, in this order,
        takes: new blocks, plus a copy for each holder that appends into a shared
        partial last block while another still holds it (the last one writes in
        place). A table on the CPU is costed as it will be after swap_in."""
        return self._append.cost(seqs)

    def can_append_slots(self, seq: Sequence) -> bool:
        """Whether append_slots(seq) can succeed now (no watermark: running
        sequences may use the last blocks)."""
        gpu_table_of(self._tables, seq.seq_id, "can_append_slots")
        cost = self.append_cost((seq,))
        return cost == 0 or cost <= self._gpu.num_free

    def append_slots(self, seq: Sequence) -> list[tuple[int, int]]:
        """Give slots to the tokens appended since the table last covered seq;
        returns copy-on-write (src, dst) pairs. O(1) unless a block fills.
        NoFreeBlocksError, changing nothing, when the GPU has no room."""
        copies: list[tuple[int, int]] = []
        if not self._append.batch((seq,), 0, copies):
            self._append.one(seq)                       # raises with the numbers
        return copies

    def append_slots_batch(self, seqs: list[Sequence] | tuple[Sequence, ...], start: int,
                           copies: list[tuple[int, int]]) -> int:
        """append_slots for seqs[start:] in order, adding their copy-on-write
        pairs to `copies`. Stops at the first sequence that gets no room, changing
        nothing for it or those after it, and returns its index (len(seqs) when
        all got their slots). The scheduler gives a step's decodes their slots in
        one call: this loop is the engine's one decode fast path."""
        return self._append.batch(seqs, start, copies)

    # ---- fork / free --------------------------------------------------------
    def fork(self, parent: Sequence, child: Sequence) -> None:
        """The child shares every block of the parent (the child's first tokens
        must be the parent's); nothing is allocated."""
        table = table_of(self._tables, parent.seq_id)
        if child.seq_id in self._tables:
            raise ValueError(f"fork: child sequence {child.seq_id} already has a block table")
        pool = self._gpu if table.on_gpu else self._cpu
        for block in table.blocks:
            pool.acquire(block)
        table.own_slots = 0                             # its last block is shared now
        self._tables[child.seq_id] = table.copy()

    def free(self, seq: Sequence) -> None:
        """Drop the sequence's references; a no-op for a sequence without a table."""
        table = self._tables.pop(seq.seq_id, None)
        if table is None:
            return
        # Deepest first, so that chains are evicted from their tails.
        release = (self._gpu if table.on_gpu else self._cpu).release
        for block in reversed(table.blocks):
            release(block)

    # ---- swap -------------------------------------------------------------------
    def can_swap_out(self, seq: Sequence) -> bool:
        return self.can_swap_out_all((seq,))

    def can_swap_out_all(self, seqs: list[Sequence] | tuple[Sequence, ...]) -> bool:
        """Whether swap_out of each of `seqs` fits the CPU."""
        return self.swap_out_cost(seqs) <= self._cpu.num_free

    def swap_out_cost(self, seqs: list[Sequence] | tuple[Sequence, ...]) -> int:
        """CPU blocks swap_out of each of `seqs` allocates (a shared block is copied once)."""
        return self._swapper.out_cost(seqs)

    def swap_in_cost(self, seqs: list[Sequence] | tuple[Sequence, ...]) -> int:
        """GPU blocks swap_in of each of `seqs` allocates (a shared block is copied once)."""
        return self._swapper.in_cost(seqs)

    def swap_out(self, seq: Sequence) -> dict[int, int]:
        """Move the sequence to the CPU; returns {gpu block: cpu block} to copy."""
        return self._swapper.swap_out(seq)

    def can_swap_in(self, seq: Sequence) -> bool:
        return self.num_free_gpu_blocks - self.swap_in_cost((seq,)) >= self.watermark_blocks

    def swap_in(self, seq: Sequence) -> dict[int, int]:
        """Move the sequence back to the GPU; returns {cpu block: gpu block}."""
        return self._swapper.swap_in(seq)
