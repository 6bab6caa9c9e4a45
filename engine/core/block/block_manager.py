"""Block manager: block tables, prefix caching, copy-on-write and swap. No torch.

Choices:
- Tables are keyed by `seq.seq_id`. `free` of a sequence without a table is a
  no-op (abort paths may free twice); the other per-sequence calls raise
  `UnknownSequenceError` (a ValueError).
- A block is registered in the prefix cache when it becomes full (allocate,
  append_slots, swap_in), before its KV is computed: the caller must not let
  another sequence read it before the step that writes it. Hits and
  duplicates: see engine/core/block/prefix_cache.py.
- swap_out leaves the GPU copies it releases in the prefix cache (their KV is
  unchanged); swap_in takes fresh GPU blocks and registers them where no entry
  has their hash yet. Blocks shared by several sequences are copied once
  (engine/core/block/swap_space.py keeps the CPU pool and the remembered copies).
- can_allocate and can_swap_in keep `watermark_blocks` free; appends may use
  the last blocks.
"""
from __future__ import annotations

import enum
from typing import Optional

from engine.core.block.allocator import BlockPool, NoFreeBlocksError
from engine.core.block.block_table import BlockTable, UnknownSequenceError
from engine.core.block.prefix_cache import HashFn, PrefixCache, PrefixChains, default_block_hash
from engine.core.block.swap_space import SwapSpace
from engine.core.kv_memory import cdiv
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
        # Read-only views: whether a GPU block is named by a remembered swap copy.
        self._out_fwd = self._swap.out_links.fwd
        self._in_rev = self._swap.in_links.rev
        self._prefix = PrefixChains(self._cache, block_size)
        self._tables: dict[int, BlockTable] = {}

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
        return self._table(seq).on_gpu

    def get_block_table(self, seq: Sequence) -> list[int]:
        return list(self._table(seq).blocks)

    def num_blocks_of(self, seq: Sequence) -> int:
        """len(get_block_table(seq)), without the copy."""
        return len(self._table(seq).blocks)

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
        fresh, parked, blocks = self._allocation_cost(seqs)[1:]
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
        for seq in seqs:
            if seq.seq_id in self._tables:
                raise ValueError(f"allocate: sequence {seq.seq_id} already has a block table")
        lookups, fresh, parked, _ = self._allocation_cost(seqs)
        available = self.num_free_gpu_blocks - parked
        if fresh > available:
            raise NoFreeBlocksError("gpu", fresh, available)
        gpu, bs = self._gpu, self.block_size
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

    def _allocation_cost(self, seqs: list[Sequence] | tuple[Sequence, ...]) -> tuple:
        """(prefix lookups, fresh blocks, evictable blocks hit, blocks) of allocating seqs."""
        lookups, fresh, blocks, parked = [], 0, 0, set()
        refs = self._gpu.refs
        for seq in seqs:
            hashes, hits = self._prefix.lookup(seq)
            own = cdiv(len(seq.token_ids), self.block_size)
            blocks += own
            fresh += own - len(hits)
            parked.update(entry.block for entry in hits if not refs[entry.block])
            lookups.append((hashes, hits))
        return lookups, fresh, len(parked), blocks

    # ---- append / copy-on-write ------------------------------------------------
    def append_cost(self, seqs: list[Sequence] | tuple[Sequence, ...]) -> int:
        """Free GPU blocks that append_slots of each of `seqs`, in this order,
        takes: new blocks, plus a copy for each holder that appends into a shared
        partial last block while another still holds it (the last one writes in
        place). A table on the CPU is costed as it will be after swap_in."""
        bs, cost, moved = self.block_size, 0, {}    # moved: holders that copied away
        for seq in seqs:
            table = self._table(seq)
            old, num_tokens, blocks = table.num_tokens, len(seq.token_ids), table.blocks
            if num_tokens < old:
                raise ValueError(f"sequence {seq.seq_id} has {num_tokens} tokens, fewer "
                                 f"than the {old} its block table covers")
            cost += cdiv(num_tokens, bs) - len(blocks)
            last = blocks[-1]
            refs = (self._gpu if table.on_gpu else self._cpu).refs[last]
            if num_tokens > old and old % bs and refs - moved.get(last, 0) > 1:
                cost += 1
                moved[last] = moved.get(last, 0) + 1
        return cost

    def can_append_slots(self, seq: Sequence) -> bool:
        """Whether append_slots(seq) can succeed now (no watermark: running
        sequences may use the last blocks)."""
        self._gpu_table(seq, "can_append_slots")
        cost = self.append_cost((seq,))
        return cost == 0 or cost <= self._gpu.num_free

    def append_slots(self, seq: Sequence) -> list[tuple[int, int]]:
        """Give slots to the tokens appended since the table last covered seq;
        returns copy-on-write (src, dst) pairs. O(1) unless a block fills.
        NoFreeBlocksError, changing nothing, when the GPU has no room."""
        copies: list[tuple[int, int]] = []
        if not self.append_slots_batch((seq,), 0, copies):
            self._append_slots(seq)                     # raises with the numbers
        return copies

    def append_slots_batch(self, seqs: list[Sequence] | tuple[Sequence, ...], start: int,
                           copies: list[tuple[int, int]]) -> int:
        """append_slots for seqs[start:] in order, adding their copy-on-write
        pairs to `copies`. Stops at the first sequence that gets no room, changing
        nothing for it or those after it, and returns its index (len(seqs) when
        all got their slots). The scheduler gives a step's decodes their slots in
        one call: this loop is the engine's one decode fast path."""
        tables, chained = self._tables, self._cache is not None
        for seq in seqs[start:]:
            try:
                table = tables[seq.seq_id]
            except KeyError:
                raise UnknownSequenceError(seq.seq_id) from None
            num_tokens = len(seq.token_ids)
            # The fast path: new tokens that fit the last GPU block, which the
            # sequence holds alone, so they are written in place (own_slots).
            if table.num_tokens < num_tokens <= table.own_slots:
                table.num_tokens = num_tokens
                if chained and num_tokens == table.own_slots and table.chain_open:
                    self._prefix.extend(table, seq.token_ids)
                continue
            try:
                copies.extend(self._append_slots(seq))
            except NoFreeBlocksError:
                return seqs.index(seq, start)           # (the rare path pays the search)
        return len(seqs)

    def _append_slots(self, seq: Sequence) -> list[tuple[int, int]]:
        table = self._gpu_table(seq, "append_slots")
        tokens = seq.token_ids
        num_tokens = len(tokens)
        cost = self.append_cost((seq,))
        if cost > self._gpu.num_free:
            raise NoFreeBlocksError("gpu", cost, self._gpu.num_free)
        blocks = table.blocks
        new_blocks = cdiv(num_tokens, self.block_size) - len(blocks)
        copies: list[tuple[int, int]] = []
        if cost > new_blocks:              # copy-on-write of the last block
            src = blocks[-1]
            dst = self._gpu.allocate()
            self._gpu.release(src)         # others still hold it
            blocks[-1] = dst
            copies.append((src, dst))
        elif table.num_tokens % self.block_size and num_tokens > table.num_tokens:
            self._swap.forget_gpu_copies(blocks[-1])   # written in place
        if new_blocks:
            blocks += [self._gpu.allocate() for _ in range(new_blocks)]
        table.num_tokens = num_tokens
        last = blocks[-1]
        table.own_slots = (table.capacity if self._gpu.refs[last] == 1
                           and last not in self._out_fwd and last not in self._in_rev else 0)
        if self._cache is not None and table.chain_open:
            self._prefix.extend(table, tokens)
        return copies

    # ---- fork / free --------------------------------------------------------
    def fork(self, parent: Sequence, child: Sequence) -> None:
        """The child shares every block of the parent (the child's first tokens
        must be the parent's); nothing is allocated."""
        table = self._table(parent)
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
        blocks: dict[int, None] = {}
        for seq in seqs:
            blocks.update(dict.fromkeys(self._gpu_table(seq, "swap_out").blocks))
        return self._swap.out_cost(list(blocks))

    def swap_in_cost(self, seqs: list[Sequence] | tuple[Sequence, ...]) -> int:
        """GPU blocks swap_in of each of `seqs` allocates (a shared block is copied once)."""
        blocks: dict[int, None] = {}
        for seq in seqs:
            table = self._table(seq)
            if table.on_gpu:
                raise ValueError(f"swap_in_cost: sequence {seq.seq_id} is not swapped out")
            blocks.update(dict.fromkeys(table.blocks))
        return self._swap.in_cost(list(blocks))

    def swap_out(self, seq: Sequence) -> dict[int, int]:
        """Move the sequence to the CPU; returns {gpu block: cpu block} to copy."""
        table = self._gpu_table(seq, "swap_out")
        needed = self._swap.out_cost(table.blocks)
        if needed > self._cpu.num_free:
            raise NoFreeBlocksError("cpu", needed, self._cpu.num_free)
        return self._swap.move(table, self._gpu, to_gpu=False)

    def can_swap_in(self, seq: Sequence) -> bool:
        return self.num_free_gpu_blocks - self.swap_in_cost((seq,)) >= self.watermark_blocks

    def swap_in(self, seq: Sequence) -> dict[int, int]:
        """Move the sequence back to the GPU; returns {cpu block: gpu block}."""
        table = self._table(seq)
        if table.on_gpu:
            raise ValueError(f"swap_in: sequence {seq.seq_id} is not swapped out")
        needed = self._swap.in_cost(table.blocks)
        if needed > self.num_free_gpu_blocks:
            raise NoFreeBlocksError("gpu", needed, self.num_free_gpu_blocks)
        mapping = self._swap.move(table, self._gpu, to_gpu=True)
        self._prefix.extend(table, seq.token_ids)
        return mapping

    # ---- internals -----------------------------------------------------------
    def _table(self, seq: Sequence) -> BlockTable:
        table = self._tables.get(seq.seq_id)
        if table is None:
            raise UnknownSequenceError(seq.seq_id)
        return table

    def _gpu_table(self, seq: Sequence, what: str) -> BlockTable:
        table = self._table(seq)
        if not table.on_gpu:
            raise ValueError(f"{what}: sequence {seq.seq_id} is swapped out (on the CPU)")
        return table
