"""Slots for the tokens a sequence appends, with copy-on-write. No torch.

A sequence's new tokens go into its last block while it has room, then into
fresh blocks. A partial last block that another sequence still holds (forked
sequences share it) is copied first, and the copy written: each holder that
appends copies it away, the last one left writes in place. A block is
registered in the prefix cache as it fills (BlockManager's docstring: before
its KV exists). The decode fast path is append_slots_batch's first test.
"""
from __future__ import annotations

from engine.core.block.allocator import BlockPool, NoFreeBlocksError
from engine.core.block.block_table import (BlockTable, UnknownSequenceError, gpu_table_of,
                                           table_of)
from engine.core.block.prefix_cache import PrefixChains
from engine.core.block.swap_space import SwapSpace
from engine.core.kv_memory import cdiv
from engine.core.sequence import Sequence


class SlotAppender:
    """append_slots over a block manager's tables, pools, swap links and chains
    (all shared with it, none owned)."""

    def __init__(self, tables: dict[int, BlockTable], gpu: BlockPool, swap: SwapSpace,
                 prefix: PrefixChains, block_size: int, caching: bool) -> None:
        self._tables = tables
        self._gpu = gpu
        self._cpu = swap.cpu
        self._swap = swap
        # Read-only views: whether a GPU block is named by a remembered swap copy.
        self._out_fwd = swap.out_links.fwd
        self._in_rev = swap.in_links.rev
        self._prefix = prefix
        self._bs = block_size
        self._caching = caching

    def cost(self, seqs: list[Sequence] | tuple[Sequence, ...]) -> int:
        """BlockManager.append_cost."""
        bs, cost, moved = self._bs, 0, {}    # moved: holders that copied away
        for seq in seqs:
            table = table_of(self._tables, seq.seq_id)
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

    def batch(self, seqs: list[Sequence] | tuple[Sequence, ...], start: int,
              copies: list[tuple[int, int]]) -> int:
        """BlockManager.append_slots_batch."""
        tables, chained = self._tables, self._caching
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
                copies.extend(self.one(seq))
            except NoFreeBlocksError:
                return seqs.index(seq, start)           # (the rare path pays the search)
        return len(seqs)

    def one(self, seq: Sequence) -> list[tuple[int, int]]:
        """The slow path of one sequence: new blocks, copy-on-write, own_slots
        set again; NoFreeBlocksError, changing nothing, without room."""
        table = gpu_table_of(self._tables, seq.seq_id, "append_slots")
        gpu, tokens = self._gpu, seq.token_ids
        num_tokens = len(tokens)
        cost = self.cost((seq,))
        if cost > gpu.num_free:
            raise NoFreeBlocksError("gpu", cost, gpu.num_free)
        blocks = table.blocks
        new_blocks = cdiv(num_tokens, self._bs) - len(blocks)
        copies: list[tuple[int, int]] = []
        if cost > new_blocks:              # copy-on-write of the last block
            src = blocks[-1]
            dst = gpu.allocate()
            gpu.release(src)               # others still hold it
            blocks[-1] = dst
            copies.append((src, dst))
        elif table.num_tokens % self._bs and num_tokens > table.num_tokens:
            self._swap.forget_gpu_copies(blocks[-1])   # written in place
        if new_blocks:
            blocks += [gpu.allocate() for _ in range(new_blocks)]
        table.num_tokens = num_tokens
        last = blocks[-1]
        table.own_slots = (table.capacity if gpu.refs[last] == 1
                           and last not in self._out_fwd and last not in self._in_rev else 0)
        if self._caching and table.chain_open:
            self._prefix.extend(table, tokens)
        return copies
