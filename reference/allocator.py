"""Plain-dict model of a paged KV block manager: the oracle for engine.core.block.block_manager.

The model keeps, in plain dicts: which sequence tables hold which blocks (ref
counts are counted from them, never stored), what each block holds (the token
ids whose KV a real cache would keep there), and the prefix cache as a map from
the whole token prefix up to a block's end to the block. No hashing, so it
cannot collide.

The model is driven with the engine's decisions (which physical blocks it
picked, which copies it asked for) and asserts that each decision is legal:
fresh blocks come from the free pool while it has any, then from the least
recently released cached block (deepest first among those released together);
hits are exactly the cached leading blocks (never the last token's block);
copy-on-write happens exactly when a shared partial block is written; a swap
copies every block it does not already have a valid copy of. It also predicts
every count and yes/no answer the engine gives.
"""
from __future__ import annotations

GPU, CPU = "gpu", "cpu"


def _cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


class ReferenceAllocator:
    def __init__(self, block_size: int, num_gpu_blocks: int, num_cpu_blocks: int,
                 prefix_caching: bool, watermark_blocks: int) -> None:
        self.bs = block_size
        self.size = {GPU: num_gpu_blocks, CPU: num_cpu_blocks}
        self.caching = prefix_caching
        self.watermark = watermark_blocks
        self.tables: dict[int, list[int]] = {}
        self.device: dict[int, str] = {}
        self.tokens: dict[int, list[int]] = {}        # tokens the table covers
        self.cached_tokens: dict[int, int] = {}
        self.chained: dict[int, int] = {}             # leading blocks that are entries
        self.chain_open: dict[int, bool] = {}
        self.data: dict[str, dict[int, list]] = {GPU: {}, CPU: {}}   # KV model
        self.cache: dict[tuple, int] = {}             # token prefix -> gpu block
        self.prefix_of: dict[int, tuple] = {}         # gpu block -> token prefix
        self.parked: dict[int, tuple[int, int]] = {}  # evictable -> (released at, -depth)
        self.links: dict[str, dict[int, int]] = {"out": {}, "in": {}}   # src -> dst copy
        self.reserved: dict[str, set[int]] = {GPU: set(), CPU: set()}   # taken this op
        self.clock = 0

    # ---- derived counts ------------------------------------------------------
    def holders(self, device: str, block: int) -> int:
        return (sum(1 for s, t in self.tables.items()
                    if self.device[s] == device and block in t)
                + (block in self.reserved[device]))

    def free_blocks(self, device: str) -> int:
        return sum(1 for b in range(self.size[device]) if self.holders(device, b) == 0)

    def _pool(self) -> list[int]:
        return [b for b in range(self.size[GPU])
                if self.holders(GPU, b) == 0 and b not in self.prefix_of]

    # ---- predictions ---------------------------------------------------------
    def hits(self, tokens: list[int]) -> list[int]:
        found = []
        if self.caching:
            for j in range((len(tokens) - 1) // self.bs):
                block = self.cache.get(tuple(tokens[:(j + 1) * self.bs]))
                if block is None:
                    break
                found.append(block)
        return found

    def can_allocate(self, tokens: list[int]) -> str:
        needed = _cdiv(len(tokens), self.bs)
        if self.size[GPU] - needed < self.watermark:
            return "NEVER"
        held = [b for b in self.hits(tokens) if self.holders(GPU, b) > 0]
        ok = self.free_blocks(GPU) - (needed - len(held)) >= self.watermark
        return "OK" if ok else "LATER"

    def append_cost(self, sid: int, num_tokens: int) -> int:
        table, old = self.tables[sid], len(self.tokens[sid])
        cow = (num_tokens > old and old % self.bs != 0
               and self.holders(GPU, table[-1]) > 1)
        return _cdiv(num_tokens, self.bs) - len(table) + int(cow)

    def can_append(self, sid: int, num_tokens: int) -> bool:
        return self.append_cost(sid, num_tokens) <= self.free_blocks(GPU)

    def swap_cost(self, sid: int) -> int:
        links = self.links["out" if self.device[sid] == GPU else "in"]
        return sum(1 for b in self.tables[sid] if b not in links)

    def can_swap_out(self, sid: int) -> bool:
        return self.swap_cost(sid) <= self.free_blocks(CPU)

    def can_swap_in(self, sid: int) -> bool:
        return self.free_blocks(GPU) - self.swap_cost(sid) >= self.watermark

    # ---- operations (checked against the engine's choices) -------------------
    def allocate(self, sid: int, tokens: list[int], table: list[int],
                 cached_tokens: int) -> None:
        assert sid not in self.tables
        hits = self.hits(tokens)
        assert len(table) == _cdiv(len(tokens), self.bs), (table, len(tokens))
        assert table[:len(hits)] == hits, f"hits {hits}, table {table}"
        assert cached_tokens == len(hits) * self.bs
        for j, b in enumerate(hits):
            assert self.data[GPU][b] == tokens[j * self.bs:(j + 1) * self.bs]
            self.parked.pop(b, None)
        for b in table[len(hits):]:
            self._take(GPU, b)
        self._add(sid, GPU, list(table), tokens[:len(hits) * self.bs], len(hits) * self.bs)
        self._write(sid, tokens)

    def append(self, sid: int, tokens: list[int], table: list[int],
               copies: list[tuple[int, int]]) -> None:
        old, old_len = self.tables[sid], len(self.tokens[sid])
        assert len(table) == _cdiv(len(tokens), self.bs)
        cow = (len(tokens) > old_len and old_len % self.bs != 0
               and self.holders(GPU, old[-1]) > 1)
        if cow:
            src, dst = old[-1], table[len(old) - 1]
            assert copies == [(src, dst)], f"expected copy {src}->{dst}, got {copies}"
            self._take(GPU, dst)
            self.data[GPU][dst] = list(self.data[GPU][src])
        else:
            assert copies == [], f"no copy-on-write expected, got {copies}"
        assert table[:len(old) - 1] == old[:-1] and (cow or table[len(old) - 1] == old[-1])
        for b in table[len(old):]:
            self._take(GPU, b)
        self.tables[sid] = list(table)
        self._clear_reserved()
        self._write(sid, tokens)

    def fork(self, parent: int, child: int, table: list[int]) -> None:
        assert table == self.tables[parent] and child not in self.tables
        self._add(child, self.device[parent], list(table), list(self.tokens[parent]),
                  self.cached_tokens[parent])
        self.chained[child] = self.chained[parent]
        self.chain_open[child] = self.chain_open[parent]

    def free(self, sid: int) -> None:
        if sid not in self.tables:
            return
        self.clock += 1
        device, table = self.device.pop(sid), self.tables.pop(sid)
        for name in (self.tokens, self.cached_tokens, self.chained, self.chain_open):
            del name[sid]
        for depth, b in reversed(list(enumerate(table, 1))):
            if self.holders(device, b) == 0:
                self._release(device, b, depth)

    def swap(self, sid: int, mapping: dict[int, int], new_table: list[int]) -> None:
        src_dev = self.device[sid]
        dst_dev = CPU if src_dev == GPU else GPU
        links = self.links["out" if src_dev == GPU else "in"]
        old = self.tables[sid]
        assert len(new_table) == len(old)
        expect_mapped = [b for b in old if b not in links]
        assert sorted(mapping) == sorted(expect_mapped), (mapping, expect_mapped)
        for src, dst in zip(old, new_table):
            if src in links:
                assert dst == links[src], f"linked copy of {src} is {links[src]}, not {dst}"
                assert self.data[dst_dev][dst] == self.data[src_dev][src], "stale copy reused"
            else:
                assert mapping[src] == dst
                self._take(dst_dev, dst)
                self.data[dst_dev][dst] = list(self.data[src_dev][src])
        self.clock += 1
        self.tables[sid], self.device[sid] = list(new_table), dst_dev
        self._clear_reserved()
        self.chained[sid], self.chain_open[sid] = 0, dst_dev == GPU
        for depth, (src, dst) in reversed(list(enumerate(zip(old, new_table), 1))):
            if self.holders(src_dev, src) == 0:
                self._release(src_dev, src, depth)
            else:
                links[src] = dst
        if dst_dev == GPU:
            self._extend_chain(sid)

    # ---- internals -----------------------------------------------------------
    def _add(self, sid: int, device: str, table: list[int], tokens: list[int],
             cached_tokens: int) -> None:
        self.tables[sid], self.device[sid], self.tokens[sid] = table, device, tokens
        self.cached_tokens[sid] = cached_tokens
        self._clear_reserved()
        self.chained[sid] = cached_tokens // self.bs
        self.chain_open[sid] = device == GPU

    def _take(self, device: str, b: int) -> None:
        """b is handed out fresh: it must be free, and on the GPU the pool comes
        before the cache, and the cache gives its least recently released block."""
        assert 0 <= b < self.size[device], f"{device} block {b} out of range"
        assert self.holders(device, b) == 0, f"{device} block {b} handed out while held"
        if device == GPU:
            pool = self._pool()
            if pool:
                assert b in pool, f"block {b} evicted while the pool has {pool}"
            else:
                victim = min(self.parked, key=self.parked.__getitem__)
                assert b == victim, f"evicted {b}, LRU order says {victim}"
                del self.parked[b]
                del self.cache[self.prefix_of.pop(b)]
        self.data[device][b] = []
        self.reserved[device].add(b)

    def _clear_reserved(self) -> None:
        self.reserved[GPU].clear()
        self.reserved[CPU].clear()

    def _release(self, device: str, b: int, depth: int) -> None:
        self._forget_links(device, b)
        if device == GPU and b in self.prefix_of:
            self.parked[b] = (self.clock, -depth)
        else:
            self.data[device].pop(b, None)

    def _forget_links(self, device: str, b: int) -> None:
        src_kind, dst_kind = ("out", "in") if device == GPU else ("in", "out")
        self.links[src_kind].pop(b, None)
        for src, dst in list(self.links[dst_kind].items()):
            if dst == b:
                del self.links[dst_kind][src]

    def _write(self, sid: int, tokens: list[int]) -> None:
        """Write KV for the tokens the table did not cover yet; only blocks the
        sequence holds alone may be written."""
        table, covered, bs = self.tables[sid], self.tokens[sid], self.bs
        for t in range(len(covered), len(tokens)):
            b = table[t // bs]
            assert self.holders(GPU, b) == 1, f"write into shared block {b}"
            cell = self.data[GPU][b]
            assert len(cell) == t % bs, f"block {b} holds {len(cell)} tokens, writing slot {t % bs}"
            cell.append(tokens[t])
            self._forget_links(GPU, b)      # its old copies are stale now
        self.tokens[sid] = list(tokens)
        self._extend_chain(sid)

    def _extend_chain(self, sid: int) -> None:
        if not self.caching:
            return
        tokens, table, bs = self.tokens[sid], self.tables[sid], self.bs
        while self.chain_open[sid] and self.chained[sid] < len(tokens) // bs:
            j = self.chained[sid]
            prefix = tuple(tokens[:(j + 1) * bs])
            owner = self.cache.get(prefix)
            if owner is None:
                assert table[j] not in self.prefix_of
                self.cache[prefix], self.prefix_of[table[j]] = table[j], prefix
            elif owner != table[j]:
                self.chain_open[sid] = False
                break
            self.chained[sid] = j + 1

    # ---- the model's own invariants ------------------------------------------
    def self_check(self) -> None:
        """Every table holds its tokens; a block in several tables sits at the
        same index with the same token prefix; cached blocks hold their prefix."""
        bs, where = self.bs, {}
        for sid, table in self.tables.items():
            dev, tokens = self.device[sid], self.tokens[sid]
            assert len(table) == _cdiv(len(tokens), bs), (sid, table, len(tokens))
            for t, tok in enumerate(tokens):
                assert self.data[dev][table[t // bs]][t % bs] == tok, (sid, t)
            for j, b in enumerate(table):
                where.setdefault((dev, b), []).append((sid, j))
        for (dev, b), users in where.items():
            (first, j), rest = users[0], users[1:]
            for sid, k in rest:
                assert k == j, f"{dev} block {b} at index {j} of {first}, {k} of {sid}"
                end = min((j + 1) * bs, len(self.tokens[first]), len(self.tokens[sid]))
                assert self.tokens[first][:end] == self.tokens[sid][:end], \
                    f"{dev} block {b} shared by {first} and {sid} with different prefixes"
        for prefix, b in self.cache.items():
            assert self.prefix_of[b] == prefix and len(prefix) % bs == 0
            assert self.data[GPU][b] == list(prefix[-bs:])
            assert (b in self.parked) == (self.holders(GPU, b) == 0)
        assert set(self.parked) <= set(self.prefix_of)
