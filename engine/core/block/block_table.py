"""One sequence's block table and its prefix-cache chain state; finding a sequence's
table among a manager's. No torch."""
from __future__ import annotations


class UnknownSequenceError(ValueError):
    """A per-sequence call named a sequence that has no block table."""

    def __init__(self, seq_id: int) -> None:
        super().__init__(f"sequence {seq_id} has no block table "
                         f"(never allocated, or already freed)")
        self.seq_id = seq_id


class BlockTable:
    """blocks: physical block ids, on the GPU or the CPU; num_tokens: tokens the
    table covers. hashes[j]: chained hash of full block j, where computed. The
    first num_chained blocks are prefix-cache entries; chain_open says whether
    the next full block may still be registered.

    own_slots: the slots of its blocks while its last block is a GPU block that
    only this table holds and no remembered swap copy names (so tokens may be
    written into it in place), else 0. It is the decode fast path's one test:
    a fresh last block sets it; fork and swaps clear it (the only ways a block
    gains holders or copies); the block manager's slow path checks and sets it.
    """

    __slots__ = ("blocks", "num_tokens", "on_gpu", "own_slots", "block_size", "hashes",
                 "num_chained", "chain_open", "num_cached_tokens")

    def __init__(self, blocks: list[int], num_tokens: int, on_gpu: bool, block_size: int,
                 hashes: list[int], num_chained: int, num_cached_tokens: int) -> None:
        self.blocks = blocks
        self.num_tokens = num_tokens
        self.on_gpu = on_gpu
        self.block_size = block_size
        self.own_slots = 0
        self.hashes = hashes
        self.num_chained = num_chained
        self.chain_open = on_gpu
        self.num_cached_tokens = num_cached_tokens

    @property
    def capacity(self) -> int:
        return len(self.blocks) * self.block_size

    def copy(self) -> "BlockTable":
        """A twin for a forked sequence (sharing every block: own_slots 0)."""
        twin = BlockTable(list(self.blocks), self.num_tokens, self.on_gpu, self.block_size,
                          list(self.hashes), self.num_chained, self.num_cached_tokens)
        twin.chain_open = self.chain_open
        return twin

    def move(self, blocks: list[int], on_gpu: bool) -> None:
        """After a swap: new block ids; none of them is a cache entry yet."""
        self.blocks = blocks
        self.on_gpu = on_gpu
        self.own_slots = 0
        self.num_chained = 0
        self.chain_open = on_gpu


def table_of(tables: dict[int, BlockTable], seq_id: int) -> BlockTable:
    """The table of a sequence; UnknownSequenceError when it has none."""
    table = tables.get(seq_id)
    if table is None:
        raise UnknownSequenceError(seq_id)
    return table


def gpu_table_of(tables: dict[int, BlockTable], seq_id: int, what: str) -> BlockTable:
    """table_of, for a call (`what`) that needs the sequence on the GPU."""
    table = table_of(tables, seq_id)
    if not table.on_gpu:
        raise ValueError(f"{what}: sequence {seq_id} is swapped out (on the CPU)")
    return table
