"""The block manager against the plain-dict oracle, step by step (Hypothesis).

Tiny pools and block sizes keep the allocator under pressure: evictions, LATER
and NEVER answers, failed appends (the sequence is then preempted by recompute
and later allocated again with all its tokens), failed swaps. Tokens come from
a four-letter alphabet and prompts often repeat or extend earlier ones, so
prefix hits, duplicate blocks and shared blocks are common.
"""
from __future__ import annotations

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant,
                                 precondition, rule)

from engine.core.block.block_manager import AllocStatus, BlockManager, NoFreeBlocksError
from engine.core.sequence import Sequence
from reference.allocator import ReferenceAllocator

# Token lists are drawn as one integer (two bits a token): far fewer draws per
# step than a list strategy, so many more steps fit in the CI budget.
PATTERN = st.integers(0, 2**80 - 1)
PICK = st.integers(0, 10**6)


def tokens_of(pattern: int, length: int) -> list[int]:
    return [(pattern >> (2 * (i % 40))) & 3 for i in range(length)]


def chained_hashes(tokens: tuple, block_size: int) -> list[int]:
    """The documented default: hash((parent hash, token ids of the block))."""
    out, parent = [], None
    for j in range(len(tokens) // block_size):
        parent = hash((parent, tokens[j * block_size:(j + 1) * block_size]))
        out.append(parent)
    return out


class BlockManagerMachine(RuleBasedStateMachine):
    @initialize(block_size=st.integers(1, 8), num_gpu=st.integers(4, 32),
                num_cpu=st.integers(0, 32), caching=st.booleans(),
                watermark=st.sampled_from([0.0, 0.0, 0.1, 0.25]))
    def setup(self, block_size, num_gpu, num_cpu, caching, watermark):
        self.bm = BlockManager(block_size, num_gpu, num_cpu, caching, watermark)
        self.ref = ReferenceAllocator(block_size, num_gpu, num_cpu, caching,
                                      int(watermark * num_gpu))
        self.seqs: dict[int, Sequence] = {}      # holding a block table
        self.preempted: list[Sequence] = []      # freed, to be allocated again
        self.history: list[list[int]] = []       # token lists seen, for prefix hits
        self.next_id = 0

    # ---- helpers --------------------------------------------------------------
    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def _pick(self, on_gpu, pick: int):
        """A sequence on the GPU (True), on the CPU (False) or anywhere (None)."""
        ids = sorted(s for s in self.seqs
                     if on_gpu is None or (self.ref.device[s] == "gpu") == on_gpu)
        return self.seqs[ids[pick % len(ids)]] if ids else None

    def _tokens(self, fresh: list[int], pick: int, mode: int) -> list[int]:
        """Fresh tokens, or an earlier token list (cut or extended): prefix hits."""
        if mode == 0 or not self.history:
            return fresh
        old = self.history[pick % len(self.history)]
        if mode == 1:
            return list(old)
        if mode == 2:
            return old[:1 + pick % len(old)]
        return old + fresh

    def _allocate(self, seq: Sequence) -> None:
        bm, ref, tokens = self.bm, self.ref, seq.token_ids
        status = bm.can_allocate(seq)
        assert status.name == ref.can_allocate(tokens)
        hits = ref.hits(tokens)
        assert bm.get_num_cached_tokens(seq) == len(hits) * ref.bs
        parked_hits = sum(1 for b in hits if ref.holders("gpu", b) == 0)
        fits = -(-len(tokens) // ref.bs) - len(hits) <= ref.free_blocks("gpu") - parked_hits
        if status is not AllocStatus.OK and not fits:
            with pytest.raises(NoFreeBlocksError):
                bm.allocate(seq)
            return
        bm.allocate(seq)
        ref.allocate(seq.seq_id, list(tokens), bm.get_block_table(seq),
                     bm.get_num_cached_tokens(seq))
        self.seqs[seq.seq_id] = seq
        self.history.append(list(tokens))

    # ---- rules ----------------------------------------------------------------
    @rule(pattern=PATTERN, length=st.integers(1, 40), pick=PICK, mode=st.integers(0, 3))
    def allocate(self, pattern, length, pick, mode):
        fresh = tokens_of(pattern, length)
        self._allocate(Sequence(self._new_id(), self._tokens(fresh, pick, mode)))

    @precondition(lambda self: self.preempted)
    @rule(pick=PICK)
    def reallocate_preempted(self, pick):
        self._allocate(self.preempted.pop(pick % len(self.preempted)))

    @rule(pick=PICK, pattern=PATTERN, k=st.integers(1, 9), copy=st.booleans())
    def append(self, pick, pattern, k, copy):
        seq = self._pick(True, pick)
        if seq is None:
            return
        # Copying another sequence's continuation makes identical full blocks.
        donor = self.history[pick % len(self.history)]
        n = len(seq.token_ids)
        new = donor[n:n + k] if copy and len(donor) > n else tokens_of(pattern, k)
        for t in new:
            seq.append_token_id(t)
        ok = self.bm.can_append_slots(seq)
        assert ok == self.ref.can_append(seq.seq_id, len(seq.token_ids))
        if not ok:
            with pytest.raises(NoFreeBlocksError):
                self.bm.append_slots(seq)
            self._free(seq)                   # preempt by recompute
            self.preempted.append(seq)
            return
        copies = self.bm.append_slots(seq)
        self.ref.append(seq.seq_id, list(seq.token_ids), self.bm.get_block_table(seq), copies)
        self.history.append(list(seq.token_ids))

    def _family(self, seq: Sequence, on_gpu: bool) -> list[Sequence]:
        """The sequences on the same device sharing seq's first block (a forked group)."""
        first = self.bm.get_block_table(seq)[0]
        return [s for _, s in sorted(self.seqs.items())
                if (self.ref.device[s.seq_id] == "gpu") == on_gpu
                and self.bm.get_block_table(s)[0] == first]

    @rule(pick=PICK, pattern=PATTERN)
    def append_family(self, pick, pattern):
        """A token for each of a group: append_cost predicts the blocks all take."""
        seq = self._pick(True, pick)
        if seq is None:
            return
        group = self._family(seq, True)
        event(f"append_family: {min(len(group), 3)}{'+' if len(group) > 3 else ''} sequences")
        for s, t in zip(group, tokens_of(pattern, len(group))):
            s.append_token_id(t)
        cost, free = self.bm.append_cost(group), self.bm.num_free_gpu_blocks
        if cost > free:
            for s in group:                     # preempt the group by recompute
                self._free(s)
                self.preempted.append(s)
            return
        for s in group:
            copies = self.bm.append_slots(s)
            self.ref.append(s.seq_id, list(s.token_ids), self.bm.get_block_table(s), copies)
            self.history.append(list(s.token_ids))
        assert free - self.bm.num_free_gpu_blocks == cost

    @rule(pick=PICK, to_gpu=st.booleans())
    def swap_family(self, pick, to_gpu):
        """A group swapped whole: its cost counts each shared block once."""
        seq = self._pick(not to_gpu, pick)
        if seq is None:
            return
        group = self._family(seq, not to_gpu)
        event(f"swap_family: {'several' if len(group) > 1 else 'one'}")
        bm = self.bm
        if to_gpu:
            cost, free = bm.swap_in_cost(group), bm.num_free_gpu_blocks
        else:
            cost, free = bm.swap_out_cost(group), bm.num_free_cpu_blocks
            assert bm.can_swap_out_all(group) == (cost <= free)
        if cost > free:
            return
        for s in group:
            mapping = bm.swap_in(s) if to_gpu else bm.swap_out(s)
            self.ref.swap(s.seq_id, mapping, bm.get_block_table(s))
        left = bm.num_free_gpu_blocks if to_gpu else bm.num_free_cpu_blocks
        assert free - left == cost

    @rule(pick=PICK)
    def fork(self, pick):
        parent = self._pick(None, pick)
        if parent is None:
            return
        child = parent.fork(self._new_id())
        self.bm.fork(parent, child)
        self.ref.fork(parent.seq_id, child.seq_id, self.bm.get_block_table(child))
        self.seqs[child.seq_id] = child

    def _free(self, seq: Sequence) -> None:
        self.bm.free(seq)
        self.ref.free(seq.seq_id)
        self.seqs.pop(seq.seq_id, None)

    @rule(pick=PICK)
    def free(self, pick):
        seq = self._pick(None, pick)
        if seq is not None:
            self._free(seq)
            self.bm.free(seq)        # freeing a sequence without a table: a no-op

    @rule(pick=PICK)
    def swap_out(self, pick):
        seq = self._pick(True, pick)
        if seq is None:
            return
        ok = self.bm.can_swap_out(seq)
        assert ok == self.ref.can_swap_out(seq.seq_id)
        if not ok:
            with pytest.raises(NoFreeBlocksError):
                self.bm.swap_out(seq)
            return
        mapping = self.bm.swap_out(seq)
        self.ref.swap(seq.seq_id, mapping, self.bm.get_block_table(seq))

    @rule(pick=PICK)
    def swap_in(self, pick):
        seq = self._pick(False, pick)
        if seq is None:
            return
        ok = self.bm.can_swap_in(seq)
        assert ok == self.ref.can_swap_in(seq.seq_id)
        fits = self.ref.swap_cost(seq.seq_id) <= self.ref.free_blocks("gpu")
        if not fits:
            with pytest.raises(NoFreeBlocksError):
                self.bm.swap_in(seq)
            return
        mapping = self.bm.swap_in(seq)        # below the watermark, but it fits
        self.ref.swap(seq.seq_id, mapping, self.bm.get_block_table(seq))

    # ---- invariants -----------------------------------------------------------
    @invariant()
    def matches_oracle(self):
        bm, ref = self.bm, self.ref
        for dev in ("gpu", "cpu"):
            refs = {b: 0 for b in range(ref.size[dev])}
            for sid, table in ref.tables.items():
                if ref.device[sid] == dev:
                    for b in table:
                        refs[b] += 1
            # each block's ref count is the number of tables that hold it
            assert [bm.ref_count(b, dev) for b in refs] == list(refs.values())
            free = sum(1 for r in refs.values() if r == 0)
            engine_free = bm.num_free_gpu_blocks if dev == "gpu" else bm.num_free_cpu_blocks
            assert engine_free == free
            assert free + sum(1 for r in refs.values() if r) == ref.size[dev]
        for sid, seq in self.seqs.items():
            assert bm.get_block_table(seq) == ref.tables[sid]
            assert bm.is_on_gpu(seq) == (ref.device[sid] == "gpu")
            assert bm.get_num_cached_tokens(seq) == ref.cached_tokens[sid]
        entries = {b: (h, toks, depth) for b, h, toks, depth in bm.cache_entries()}
        assert sorted(entries) == sorted(ref.prefix_of)
        for b, prefix in ref.prefix_of.items():
            h, toks, depth = entries[b]
            assert toks == prefix[-ref.bs:] and depth == len(prefix)
            assert h == chained_hashes(prefix, ref.bs)[-1]
        assert bm.evictable_blocks() == sorted(ref.parked, key=ref.parked.__getitem__)
        ref.self_check()

    def teardown(self):
        if not hasattr(self, "bm"):
            return
        for seq in list(self.seqs.values()):
            self._free(seq)
        # every block is free, cached ones evictable
        assert self.bm.num_free_gpu_blocks == self.bm.num_total_gpu_blocks
        assert self.bm.num_free_cpu_blocks == self.bm.num_total_cpu_blocks
        assert sorted(self.bm.evictable_blocks()) == sorted(b for b, *_ in self.bm.cache_entries())


# At least 120 examples of up to 300 steps (Hypothesis ends some runs early):
# under the ci profile some 3e4 steps, ~25 s of one core. Profiles that ask for
# more examples (nightly) get them, of 500 steps.
_base = settings.default
TestBlockManagerStateful = BlockManagerMachine.TestCase
TestBlockManagerStateful.settings = settings(
    _base, max_examples=max(120, _base.max_examples),
    stateful_step_count=300 if _base.max_examples <= 120 else 500)
