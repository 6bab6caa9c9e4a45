"""Block manager: block tables, prefix caching, copy-on-write and swap. No torch.

Choices (the issue leaves them open):
- Tables are keyed by `seq.seq_id`. `free` of a sequence without a table is a
  no-op (abort paths may free twice); the other per-sequence calls raise
  `UnknownSequenceError` (a ValueError).
- A full block is registered in the prefix cache when it becomes full (at
  allocate, append_slots or swap_in), before its KV is computed: the caller
  must not let another sequence read it before the step that writes it.
- Prefix hits stop at the first miss and never cover the last prompt token, so
  a fully cached prompt still computes its last token, in a block of its own.
- A block that fills up with the same hash as an existing entry stays
  private (the table is never changed under a sequence), and so do all later
  blocks of that sequence: an entry is registered only on top of its parent.
- swap_out leaves the GPU copies it releases in the prefix cache (their KV is
  unchanged); swap_in takes fresh GPU blocks and registers them where no entry
  has their hash yet. Blocks shared by several sequences are copied once.
- can_allocate and can_swap_in keep `watermark_blocks` free; appends may use
  the last blocks.
"""
from __future__ import annotations

import enum
from typing import Optional

from engine.block_allocator import BlockAllocator, NoFreeBlocksError
from engine.block_table import BlockTable, UnknownSequenceError
from engine.prefix_cache import HashFn, PrefixCache, default_block_hash
from engine.sequence import Sequence
from engine.swap_links import SwapLinks

__all__ = ["AllocStatus", "BlockManager", "NoFreeBlocksError", "UnknownSequenceError"]


class AllocStatus(enum.Enum):
    OK = "ok"          # can allocate now
    LATER = "later"    # not enough free blocks now
    NEVER = "never"    # more blocks than the GPU has (less the watermark)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class BlockManager:
    def __init__(self, block_size: int = 16, num_gpu_blocks: int = 64,
                 num_cpu_blocks: int = 64, enable_prefix_caching: bool = True,
                 watermark: float = 0.01, hash_fn: HashFn = default_block_hash) -> None:
        if not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be an int >= 1, got {block_size!r}")
        if not isinstance(num_gpu_blocks, int) or num_gpu_blocks < 1:
            raise ValueError(f"num_gpu_blocks must be an int >= 1, got {num_gpu_blocks!r}")
        if not isinstance(num_cpu_blocks, int) or num_cpu_blocks < 0:
            raise ValueError(f"num_cpu_blocks must be an int >= 0, got {num_cpu_blocks!r}")
        if not 0.0 <= watermark < 1.0:
            raise ValueError(f"watermark must be in [0, 1), got {watermark!r}")
        self.block_size = block_size
        self.num_total_gpu_blocks = num_gpu_blocks
        self.num_total_cpu_blocks = num_cpu_blocks
        self.enable_prefix_caching = enable_prefix_caching
        self.watermark_blocks = int(watermark * num_gpu_blocks)
        self._gpu = BlockAllocator(num_gpu_blocks, "gpu")
        self._cpu = BlockAllocator(num_cpu_blocks, "cpu")
        self._cache: Optional[PrefixCache] = (
            PrefixCache(hash_fn) if enable_prefix_caching else None)
        self._tables: dict[int, BlockTable] = {}
        self._out = SwapLinks()   # gpu block -> its cpu copy
        self._in = SwapLinks()    # cpu block -> its gpu copy

    # ---- counts -------------------------------------------------------------
    @property
    def num_free_gpu_blocks(self) -> int:
        """Pool blocks plus cached blocks that no sequence holds (evictable)."""
        cache = self._cache
        return self._gpu.num_free + (cache.num_evictable if cache else 0)

    @property
    def num_free_cpu_blocks(self) -> int:
        return self._cpu.num_free

    def get_num_free_gpu_blocks(self) -> int:
        return self.num_free_gpu_blocks

    def get_num_free_cpu_blocks(self) -> int:
        return self._cpu.num_free

    # ---- queries ------------------------------------------------------------
    def has_seq(self, seq: Sequence) -> bool:
        return seq.seq_id in self._tables

    def is_on_gpu(self, seq: Sequence) -> bool:
        return self._table(seq).on_gpu

    def get_block_table(self, seq: Sequence) -> list[int]:
        return list(self._table(seq).blocks)

    def get_num_cached_tokens(self, seq: Sequence) -> int:
        """Tokens of reused prefix-cache blocks. For a sequence without a table:
        the tokens that allocating it now would reuse."""
        table = self._tables.get(seq.seq_id)
        if table is not None:
            return table.num_cached_tokens
        return len(self._lookup(seq.token_ids)[1]) * self.block_size

    def ref_count(self, block: int, device: str = "gpu") -> int:
        return self._allocator(device).ref_count(block)

    def cache_entries(self) -> list[tuple[int, int, tuple, int]]:
        """(block, hash, token ids, depth) of every prefix-cache entry."""
        if self._cache is None:
            return []
        return [(e.block, e.hash, e.tokens, e.depth) for e in self._cache.entries()]

    def evictable_blocks(self) -> list[int]:
        """Cached blocks no sequence holds, the next to be evicted first."""
        return self._cache.evictable_blocks() if self._cache else []

    # ---- allocate -------------------------------------------------------------
    def can_allocate(self, seq: Sequence) -> AllocStatus:
        tokens = seq.token_ids
        needed = _cdiv(len(tokens), self.block_size)
        if self.num_total_gpu_blocks - needed < self.watermark_blocks:
            return AllocStatus.NEVER
        # Hits on held blocks cost nothing; hits on evictable ones use a free block.
        gpu = self._gpu
        held_hits = sum(1 for e in self._lookup(tokens)[1] if gpu.ref_count(e.block))
        if self.num_free_gpu_blocks - (needed - held_hits) >= self.watermark_blocks:
            return AllocStatus.OK
        return AllocStatus.LATER

    def allocate(self, seq: Sequence) -> None:
        """Build the table for all of seq.token_ids (prompt, plus the generated
        tokens of a recomputed sequence), reusing cached full blocks."""
        if seq.seq_id in self._tables:
            raise ValueError(f"allocate: sequence {seq.seq_id} already has a block table")
        tokens = seq.token_ids
        hashes, hits = self._lookup(tokens)
        gpu, cache = self._gpu, self._cache
        fresh = _cdiv(len(tokens), self.block_size) - len(hits)
        parked_hits = sum(1 for e in hits if not gpu.ref_count(e.block))
        available = self.num_free_gpu_blocks - parked_hits
        if fresh > available:
            raise NoFreeBlocksError("gpu", fresh, available)
        blocks = []
        for entry in hits:
            block = entry.block
            if gpu.ref_count(block):
                gpu.incref(block)
            else:
                cache.unpark(block)
                gpu.claim(block)
            blocks.append(block)
        for _ in range(fresh):
            blocks.append(self._alloc_gpu())
        table = BlockTable(blocks, len(tokens), True, hashes, len(hits),
                           len(hits) * self.block_size)
        self._tables[seq.seq_id] = table
        if cache is not None:
            self._extend_chain(table, tokens)

    # ---- append / copy-on-write ------------------------------------------------
    def _append_cost(self, table: BlockTable, num_tokens: int) -> tuple[int, bool]:
        """(new blocks, whether the last block needs copy-on-write)."""
        bs = self.block_size
        old = table.num_tokens
        if num_tokens < old:
            raise ValueError(f"sequence has {num_tokens} tokens, fewer than the "
                             f"{old} its block table covers")
        new_blocks = _cdiv(num_tokens, bs) - len(table.blocks)
        cow = (num_tokens > old and old % bs != 0
               and self._gpu.ref_count(table.blocks[-1]) > 1)
        return new_blocks, cow

    def can_append_slots(self, seq: Sequence) -> bool:
        table = self._gpu_table(seq, "can_append_slots")
        new_blocks, cow = self._append_cost(table, len(seq.token_ids))
        return new_blocks + cow <= self.num_free_gpu_blocks

    def append_slots(self, seq: Sequence) -> list[tuple[int, int]]:
        """Give slots to the tokens appended since the table last covered seq;
        returns copy-on-write (src, dst) pairs. O(1) unless a block fills."""
        table = self._gpu_table(seq, "append_slots")
        tokens = seq.token_ids
        num_tokens = len(tokens)
        new_blocks, cow = self._append_cost(table, num_tokens)
        if new_blocks + cow > self.num_free_gpu_blocks:
            raise NoFreeBlocksError("gpu", new_blocks + cow, self.num_free_gpu_blocks)
        blocks = table.blocks
        copies: list[tuple[int, int]] = []
        if cow:
            src = blocks[-1]
            dst = self._alloc_gpu()
            self._gpu.decref(src)          # others still hold it
            blocks[-1] = dst
            copies.append((src, dst))
        elif table.num_tokens % self.block_size and num_tokens > table.num_tokens:
            last = blocks[-1]              # written in place: old copies go stale
            if self._out:
                self._out.forget_src(last)
            if self._in:
                self._in.forget_dst(last)
        for _ in range(new_blocks):
            blocks.append(self._alloc_gpu())
        table.num_tokens = num_tokens
        if self._cache is not None and table.chain_open:
            self._extend_chain(table, tokens)
        return copies

    # ---- fork / free --------------------------------------------------------
    def fork(self, parent: Sequence, child: Sequence) -> None:
        """The child shares every block of the parent (the child's first tokens
        must be the parent's); nothing is allocated."""
        table = self._table(parent)
        if child.seq_id in self._tables:
            raise ValueError(f"fork: child sequence {child.seq_id} already has a block table")
        alloc = self._allocator("gpu" if table.on_gpu else "cpu")
        for block in table.blocks:
            alloc.incref(block)
        self._tables[child.seq_id] = table.copy()

    def free(self, seq: Sequence) -> None:
        """Drop the sequence's references; a no-op for a sequence without a table."""
        table = self._tables.pop(seq.seq_id, None)
        if table is None:
            return
        # Deepest first, so that chains are evicted from their tails.
        if table.on_gpu:
            for block in reversed(table.blocks):
                self._decref_gpu(block)
        else:
            for block in reversed(table.blocks):
                if self._cpu.decref(block) == 0:
                    self._release_cpu(block)

    # ---- swap -------------------------------------------------------------------
    def can_swap_out(self, seq: Sequence) -> bool:
        table = self._gpu_table(seq, "can_swap_out")
        return self._swap_cost(table.blocks, self._out) <= self._cpu.num_free

    def swap_out(self, seq: Sequence) -> dict[int, int]:
        """Move the sequence to the CPU; returns {gpu block: cpu block} to copy."""
        table = self._gpu_table(seq, "swap_out")
        needed = self._swap_cost(table.blocks, self._out)
        if needed > self._cpu.num_free:
            raise NoFreeBlocksError("cpu", needed, self._cpu.num_free)
        cpu_blocks, mapping = self._copy_blocks(table.blocks, self._out, self._cpu,
                                                self._cpu.allocate)
        for gpu_block, cpu_block in zip(reversed(table.blocks), reversed(cpu_blocks)):
            if self._gpu.decref(gpu_block) == 0:
                self._release_gpu(gpu_block)
            else:
                self._out.link(gpu_block, cpu_block)
        table.move(cpu_blocks, on_gpu=False)
        return mapping

    def can_swap_in(self, seq: Sequence) -> bool:
        table = self._table(seq)
        if table.on_gpu:
            raise ValueError(f"can_swap_in: sequence {seq.seq_id} is not swapped out")
        needed = self._swap_cost(table.blocks, self._in)
        return self.num_free_gpu_blocks - needed >= self.watermark_blocks

    def swap_in(self, seq: Sequence) -> dict[int, int]:
        """Move the sequence back to the GPU; returns {cpu block: gpu block}."""
        table = self._table(seq)
        if table.on_gpu:
            raise ValueError(f"swap_in: sequence {seq.seq_id} is not swapped out")
        needed = self._swap_cost(table.blocks, self._in)
        if needed > self.num_free_gpu_blocks:
            raise NoFreeBlocksError("gpu", needed, self.num_free_gpu_blocks)
        gpu_blocks, mapping = self._copy_blocks(table.blocks, self._in, self._gpu,
                                                self._alloc_gpu)
        for cpu_block, gpu_block in zip(reversed(table.blocks), reversed(gpu_blocks)):
            if self._cpu.decref(cpu_block) == 0:
                self._release_cpu(cpu_block)
            else:
                self._in.link(cpu_block, gpu_block)
        table.move(gpu_blocks, on_gpu=True)
        if self._cache is not None:
            self._extend_chain(table, seq.token_ids)
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

    def _allocator(self, device: str) -> BlockAllocator:
        if device == "gpu":
            return self._gpu
        if device == "cpu":
            return self._cpu
        raise ValueError(f"device must be 'gpu' or 'cpu', got {device!r}")

    def _alloc_gpu(self) -> int:
        """A pool block if there is one, else the LRU evictable cached block."""
        if self._gpu.num_free:
            return self._gpu.allocate()
        cache = self._cache
        if cache is None or not cache.num_evictable:
            raise NoFreeBlocksError("gpu", 1, 0)
        block = cache.evict()
        self._gpu.claim(block)
        return block

    def _decref_gpu(self, block: int) -> None:
        if self._gpu.decref(block) == 0:
            self._release_gpu(block)

    def _release_gpu(self, block: int) -> None:
        self._out.forget_src(block)
        self._in.forget_dst(block)
        cache = self._cache
        if cache is not None and cache.entry_of(block) is not None:
            cache.park(block)
        else:
            self._gpu.release(block)

    def _release_cpu(self, block: int) -> None:
        self._out.forget_dst(block)
        self._in.forget_src(block)
        self._cpu.release(block)

    @staticmethod
    def _swap_cost(blocks: list[int], links: SwapLinks) -> int:
        return sum(1 for b in blocks if links.get(b) is None)

    @staticmethod
    def _copy_blocks(blocks, links, dst_alloc, alloc_fn):
        """Destination blocks for a swap: a linked copy is shared (incref), the
        rest are allocated and returned in the copy mapping."""
        dst_blocks, mapping = [], {}
        for src in blocks:
            dst = links.get(src)
            if dst is None:
                dst = alloc_fn()
                mapping[src] = dst
            else:
                dst_alloc.incref(dst)
            dst_blocks.append(dst)
        return dst_blocks, mapping

    def _lookup(self, tokens: list[int]):
        """(chained hashes computed, cache entries hit) for a prompt. Hits stop
        at the first miss and never include the block of the last token."""
        cache = self._cache
        if cache is None:
            return [], []
        bs = self.block_size
        max_hits = (len(tokens) - 1) // bs
        hash_fn, lookup = cache.hash_fn, cache.lookup
        hashes, hits = [], []
        parent_hash = parent_serial = None
        for j in range(max_hits):
            chunk = tuple(tokens[j * bs:(j + 1) * bs])
            parent_hash = hash_fn(parent_hash, chunk)
            hashes.append(parent_hash)
            entry = lookup(parent_hash, chunk, parent_serial)
            if entry is None:
                break
            hits.append(entry)
            parent_serial = entry.serial
        return hashes, hits

    def _extend_chain(self, table: BlockTable, tokens: list[int]) -> None:
        """Register the table's newly full blocks, each on top of its parent."""
        cache, bs = self._cache, self.block_size
        full = table.num_tokens // bs
        hashes, blocks = table.hashes, table.blocks
        while table.chain_open and table.num_chained < full:
            j = table.num_chained
            chunk = tuple(tokens[j * bs:(j + 1) * bs])
            if j < len(hashes):
                block_hash = hashes[j]
            else:
                block_hash = cache.hash_fn(hashes[j - 1] if j else None, chunk)
                hashes.append(block_hash)
            parent = cache.entry_of(blocks[j - 1]).serial if j else None
            if cache.register(block_hash, chunk, blocks[j], (j + 1) * bs, parent) is None:
                table.chain_open = False
            else:
                table.num_chained = j + 1
