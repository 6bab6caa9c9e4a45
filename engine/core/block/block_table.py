"""One sequence's block table and its prefix-cache chain state. No torch."""
from __future__ import annotations


class UnknownSequenceError(ValueError):
    """A per-sequence call named a sequence that has no block table."""

    def __init__(self, seq_id: int) -> None:
        super().__init__(f"sequence {seq_id} has no block table "
                         f"(never allocated, or already freed)")
        self.seq_id = seq_id


class BlockTable:
    """blocks: physical block ids, on the GPU or the CPU; num_tokens: tokens the
    table covers. gpu_slots: the slots of its blocks while on the GPU, 0 on the
    CPU (one attribute for the decode fast path). hashes[j]: chained hash of full
    block j, where computed. The first num_chained blocks are prefix-cache
    entries; chain_open says whether the next full block may still be registered."""

    __slots__ = ("blocks", "num_tokens", "on_gpu", "gpu_slots", "block_size", "hashes",
                 "num_chained", "chain_open", "num_cached_tokens")

    def __init__(self, blocks: list[int], num_tokens: int, on_gpu: bool, block_size: int,
                 hashes: list[int], num_chained: int, num_cached_tokens: int) -> None:
        self.blocks = blocks
        self.num_tokens = num_tokens
        self.on_gpu = on_gpu
        self.block_size = block_size
        self.gpu_slots = len(blocks) * block_size if on_gpu else 0
        self.hashes = hashes
        self.num_chained = num_chained
        self.chain_open = on_gpu
        self.num_cached_tokens = num_cached_tokens

    def copy(self) -> "BlockTable":
        twin = BlockTable(list(self.blocks), self.num_tokens, self.on_gpu, self.block_size,
                          list(self.hashes), self.num_chained, self.num_cached_tokens)
        twin.chain_open = self.chain_open
        return twin

    def add_blocks(self, blocks: list[int]) -> None:
        """Append GPU blocks."""
        self.blocks.extend(blocks)
        self.gpu_slots = len(self.blocks) * self.block_size

    def move(self, blocks: list[int], on_gpu: bool) -> None:
        """After a swap: new block ids; none of them is a cache entry yet."""
        self.blocks = blocks
        self.on_gpu = on_gpu
        self.gpu_slots = len(blocks) * self.block_size if on_gpu else 0
        self.num_chained = 0
        self.chain_open = on_gpu
