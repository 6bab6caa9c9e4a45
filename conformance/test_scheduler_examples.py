"""Scheduler worked examples (vLLM's and textbook ones), each step checked by hand."""
from __future__ import annotations

import pytest

from conformance.sim_harness import Harness, prompt, shape
from conformance.sim_model import reference_generate
from engine.core.config import CacheConfig, SchedulerConfig
from engine.core.sequence import SequenceStatus as S


def test_two_60_token_prompts_at_budget_64_chunk_60_4_then_56_plus_decode():
    h = Harness(SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=64, max_model_len=256,
                                enable_chunked_prefill=True), CacheConfig(block_size=16,
                                                                          num_gpu_blocks=64))
    h.add("a", prompt(60, 1))
    h.add("b", prompt(60, 2))
    out, _ = h.step()
    assert shape(out) == [("a", 0, 60, True, True), ("b", 0, 4, True, False)]
    assert out.num_batched_tokens == 64
    out, _ = h.step()
    assert shape(out) == [("a", 60, 1, False, True), ("b", 4, 56, True, True)]
    assert (out.num_batched_tokens, out.num_decode_tokens, out.num_prefill_tokens) == (57, 1, 56)


@pytest.mark.parametrize("chunked", [False, True])
def test_32_decodes_and_a_200_token_prefill_fit_budget_256(chunked):
    h = Harness(SchedulerConfig(max_num_seqs=64, max_num_batched_tokens=256, max_model_len=512,
                                enable_chunked_prefill=chunked),
                CacheConfig(block_size=16, num_gpu_blocks=256))
    for i in range(32):
        h.add(f"d{i}", prompt(5, i))
    out, _ = h.step()
    assert len(out.scheduled) == 32 and out.num_batched_tokens == 160
    h.add("long", prompt(200, 99))
    out, _ = h.step()
    assert out.num_decode_tokens == 32 and out.num_prefill_tokens == 200
    assert out.num_batched_tokens == 232
    assert shape(out)[-1] == ("long", 0, 200, True, True)


def tiny(mode: str, cpu_blocks: int) -> Harness:
    # 4 blocks of 4 tokens, no watermark: two 7-token prompts fill the pool.
    return Harness(SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=64, max_model_len=64,
                                   preemption_mode=mode),
                   CacheConfig(block_size=4, num_gpu_blocks=4, num_cpu_blocks=cpu_blocks,
                               watermark=0.0))


def test_recompute_preemption_frees_the_latest_and_reprefills_outputs():
    h = tiny("recompute", 0)
    a, b = h.add("a", prompt(7, 1), 6), h.add("b", prompt(7, 2), 6)
    h.step()                                  # both prompts: 8 slots each, 7 used
    out, _ = h.step()                         # both decode position 7, no new block
    assert out.preempted == [] and len(out.scheduled) == 2
    out, _ = h.step()                         # position 8 needs a 5th block: b goes
    assert out.preempted == ["b"] and shape(out) == [("a", 8, 1, False, True)]
    assert h.sched.num_preemptions == {"recompute": 1, "swap": 0}
    assert b.seq.status is S.WAITING and b.seq.num_computed_tokens == 0
    assert len(b.output_token_ids) == 2       # outputs kept, to be re-prefilled
    assert h.sched.block_manager.num_free_gpu_blocks == 1
    h.drain()
    for r, p in ((a, prompt(7, 1)), (b, prompt(7, 2))):
        assert r.output_token_ids == reference_generate(p, 6, 64)[0]
    # b came back with prompt + its 2 outputs as one 9-token prefill.
    assert h.sched.block_manager.num_free_gpu_blocks == 4


def test_swap_preemption_moves_blocks_to_cpu_and_back():
    h = tiny("swap", 4)
    a, b = h.add("a", prompt(7, 1), 6), h.add("b", prompt(7, 2), 6)
    h.step()
    h.step()
    out, _ = h.step()
    assert out.preempted == ["b"] and b.seq.status is S.SWAPPED
    assert len(out.blocks_to_swap_out) == 2 and h.sched.num_preemptions["swap"] == 1
    assert h.sched.block_manager.num_free_cpu_blocks == 2
    while b.seq.status is S.SWAPPED:
        out, _ = h.step()
    assert len(out.blocks_to_swap_in) == 2 and b.seq.num_computed_tokens > 0
    h.drain()
    assert b.output_token_ids == reference_generate(prompt(7, 2), 6, 64)[0]
    assert h.sched.block_manager.num_free_cpu_blocks == 4


def test_swap_without_cpu_room_falls_back_to_recompute():
    h = tiny("swap", 1)                       # b holds 2 blocks; the CPU has 1
    h.add("a", prompt(7, 1), 6)
    b = h.add("b", prompt(7, 2), 6)
    h.step(), h.step()
    out, _ = h.step()
    assert out.preempted == ["b"] and b.seq.status is S.WAITING
    assert h.sched.num_preemptions == {"recompute": 1, "swap": 0}


def test_latest_request_needing_a_block_preempts_itself():
    h = tiny("recompute", 0)
    h.add("a", prompt(6, 1), 6)               # 2 blocks, room to position 7
    b = h.add("b", prompt(8, 2), 6)           # 2 full blocks: position 8 needs a 3rd
    h.step()
    out, _ = h.step()
    assert out.preempted == ["b"] and shape(out) == [("a", 6, 1, False, True)]
    assert b.seq.status is S.WAITING


def test_abort_from_each_queue_frees_blocks():
    h = tiny("swap", 4)
    h.add("a", prompt(7, 1), 9)               # up to 15 tokens: 4 blocks, the pool
    b = h.add("b", prompt(7, 2), 9)
    c = h.add("c", prompt(7, 3), 9)           # waits: the pool is full
    h.step(), h.step(), h.step()              # b swapped out
    assert (b.seq.status, c.seq.status) == (S.SWAPPED, S.WAITING)
    bm = h.sched.block_manager
    assert h.sched.abort("c") and c.seq.status is S.FINISHED_ABORTED
    assert h.sched.abort("b") and bm.num_free_cpu_blocks == 4
    assert h.sched.abort("a") and bm.num_free_gpu_blocks == 4
    assert not h.sched.has_unfinished() and not h.sched.waiting
    assert h.sched.abort("a") is False        # finished: a reported no-op
    assert h.sched.abort("never-added") is False
    assert h.sched.schedule().scheduled == []


def test_infeasible_requests_are_ignored_with_a_message_not_left_waiting():
    h = Harness(SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=32, max_model_len=40),
                CacheConfig(block_size=4, num_gpu_blocks=6, watermark=0.0))
    too_long = h.add("too-long", prompt(41))
    too_big = h.add("too-big", prompt(30), max_tokens=1)     # 8 blocks > 6
    over_budget = h.add("over-budget", prompt(33), max_tokens=1)   # chunked prefill off
    ok = h.add("ok", prompt(20), max_tokens=4)
    out, _ = h.step()
    assert [r.request_id for r in out.ignored] == ["too-long", "too-big", "over-budget"]
    assert "max_model_len=40" in too_long.error and "41 tokens" in too_long.error
    assert "num_gpu_blocks=6" in too_big.error
    assert "max_num_batched_tokens=32" in over_budget.error
    assert all(r.finish_reason == "ignored" for r in (too_long, too_big, over_budget))
    assert shape(out) == [("ok", 0, 20, True, True)]
    h.drain()
    assert ok.finish_reason == "length" and len(ok.output_token_ids) == 4


def test_prefix_cache_hits_count_as_computed():
    h = Harness(SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=256, max_model_len=256),
                CacheConfig(block_size=16, num_gpu_blocks=32, enable_prefix_caching=True))
    shared = prompt(48, 5)
    h.add("first", shared, 3)
    h.step()
    h.add("same", list(shared), 3)            # all 3 blocks cached: the last token recomputes
    h.add("longer", shared + [1, 2], 3)       # 50 tokens: 48 cached
    out, _ = h.step()
    assert [(r, s, n) for r, s, n, *_ in shape(out)[1:]] == [("same", 32, 16), ("longer", 48, 2)]
    h.drain()


def test_stop_rules_eos_ignore_eos_max_tokens_and_max_model_len():
    p = prompt(5)
    first = reference_generate(p, 1, 100)[0][0]
    h = Harness(SchedulerConfig(max_model_len=8), CacheConfig(block_size=4, num_gpu_blocks=16))
    eos = h.add("eos", p, 10, eos_token_ids=[first])
    ign = h.add("ign", p, 2, eos_token_ids=[first], ignore_eos=True)
    cap = h.add("cap", p, 100)
    h.drain()
    assert (eos.finish_reason, eos.output_token_ids) == ("stop", [first])
    assert ign.finish_reason == "length" and len(ign.output_token_ids) == 2
    # vLLM's rule: finish once the next token would need position max_model_len.
    assert cap.finish_reason == "length" and len(cap.seq) == 9


def test_bad_calls_raise_clear_errors():
    h = tiny("recompute", 0)
    h.add("a", prompt(3), 4)
    with pytest.raises(ValueError, match="already live"):
        h.add("a", prompt(3), 4)
    with pytest.raises(ValueError, match="max_tokens"):
        h.add("z", prompt(3), 0)
    out = h.sched.schedule()
    with pytest.raises(RuntimeError, match="before update"):
        h.sched.schedule()
    with pytest.raises(ValueError, match="no token for seq_ids"):
        h.sched.update(out, {})
    with pytest.raises(ValueError, match="did not sample"):
        h.sched.update(out, {0: 1, 99: 1})
    h.sched.update(out, {0: 1})
    with pytest.raises(ValueError, match="already updated"):
        h.sched.update(out, {0: 1})


@pytest.mark.parametrize("kwargs, field", [
    ({"max_num_seqs": 0}, "max_num_seqs"), ({"max_num_batched_tokens": -1}, "max_num_batched_tokens"),
    ({"max_model_len": 1.5}, "max_model_len"), ({"preemption_mode": "drop"}, "preemption_mode"),
    ({"enable_chunked_prefill": 1}, "enable_chunked_prefill")])
def test_scheduler_config_names_the_bad_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SchedulerConfig(**kwargs)


@pytest.mark.parametrize("kwargs, field", [
    ({"block_size": 0}, "block_size"), ({"num_gpu_blocks": True}, "num_gpu_blocks"),
    ({"num_cpu_blocks": -1}, "num_cpu_blocks"), ({"watermark": 1.0}, "watermark"),
    ({"enable_prefix_caching": "yes"}, "enable_prefix_caching")])
def test_cache_config_names_the_bad_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        CacheConfig(**kwargs)


# ---- parallel sampling (n > 1) ---------------------------------------------------

def oracle(p: list[int], max_tokens: int, max_model_len: int, n: int) -> list[list[int]]:
    return [reference_generate(p, max_tokens, max_model_len, index=i)[0] for i in range(n)]


def test_n3_prefills_once_forks_at_the_first_sample_then_copies_on_write():
    h = Harness(SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=64, max_model_len=64),
                CacheConfig(block_size=4, num_gpu_blocks=16, watermark=0.0))
    bm, p = h.sched.block_manager, prompt(6)
    g = h.add("g", p, 5, n=3)
    out, _ = h.step()                         # one 6-token prefill that samples 3 tokens
    assert shape(out) == [("g", 0, 6, True, True)]
    assert out.num_samples == {g.seq.seq_id: 3} and out.samples_for(g.seq.seq_id) == 3
    assert g.is_group and len(g.seqs) == 3 and h.sched.num_running_seqs == 3
    assert [s.output_token_ids for s in g.seqs] == [o[:1] for o in oracle(p, 5, 64, 3)]
    full, partial = bm.get_block_table(g.seq)
    assert all(bm.get_block_table(s) == [full, partial] for s in g.seqs)
    assert bm.ref_count(full) == bm.ref_count(partial) == 3 and bm.num_free_gpu_blocks == 14
    out, _ = h.step()                         # three decodes at position 6
    assert shape(out) == [("g", 6, 1, False, True)] * 3 and not out.num_samples
    # The first two holders copy the shared partial block; the last writes it in place.
    assert [src for src, _ in out.blocks_to_copy] == [partial, partial]
    tables = [bm.get_block_table(s) for s in g.seqs]
    assert [t[0] for t in tables] == [full] * 3 and tables[2][1] == partial
    assert len({t[1] for t in tables}) == 3 and bm.num_free_gpu_blocks == 12
    h.drain()
    assert [s.output_token_ids for s in g.seqs] == oracle(p, 5, 64, 3)
    assert [s.finish_reason for s in g.seqs] == ["length"] * 3 and g.finish_reason == "length"
    assert bm.num_free_gpu_blocks == 16 and h.sched.num_running_seqs == 0


def test_n_too_large_is_ignored_and_bad_n_is_a_value_error():
    h = Harness(SchedulerConfig(max_num_seqs=2, max_num_batched_tokens=64, max_model_len=64),
                CacheConfig(block_size=4, num_gpu_blocks=16, watermark=0.0))
    wide = h.add("wide", prompt(3), 4, n=3)
    big = h.add("big", prompt(9), 8, n=2)     # 2 x 4 blocks fit; 3 x ... would not
    huge = h.add("huge", prompt(30), 30, n=2)  # 2 x 15 blocks > 16
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="n must be a positive int"):
            h.sched.add_request("bad", prompt(3), 4, n=bad)
    out, _ = h.step()
    assert [r.request_id for r in out.ignored] == ["wide", "huge"]
    assert "n=3 sequences, more than max_num_seqs=2" in wide.error
    assert "2 sequences of up to 59 tokens need 2 x 15 blocks" in huge.error
    h.drain()
    assert [s.output_token_ids for s in big.seqs] == oracle(prompt(9), 8, 64, 2)


def test_update_wants_a_list_of_n_tokens_for_a_first_sample():
    h = Harness(SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=64, max_model_len=64),
                CacheConfig(block_size=4, num_gpu_blocks=16, watermark=0.0))
    g = h.add("g", prompt(5), 4, n=2)
    out = h.sched.schedule()
    pid = g.seq.seq_id
    for bad in (7, [7], [7, 8, 9]):
        with pytest.raises(ValueError, match=rf"sampled\[{pid}\].*list of 2 token ids"):
            h.sched.update(out, {pid: bad})
    assert len(g.seqs) == 1 and g.seq.num_computed_tokens == 0     # nothing changed
    h.sched.update(out, {pid: [7, 8]})
    assert [s.output_token_ids for s in g.seqs] == [[7], [8]]
    assert g.seqs[1].seq_id != pid and g.seqs[1].num_computed_tokens == 5


def test_a_group_runs_whole_or_waits_for_budget():
    # Budget 4: a decodes and c's last chunk leave 2 tokens, fewer than g's 3 sequences.
    h = Harness(SchedulerConfig(max_num_seqs=8, max_num_batched_tokens=4, max_model_len=64,
                                enable_chunked_prefill=True),
                CacheConfig(block_size=4, num_gpu_blocks=32, watermark=0.0))
    a, c = h.add("a", prompt(2, 1), 5), h.add("c", prompt(9, 2), 6)
    g = h.add("g", prompt(2, 3), 3, n=3)
    for want in ([("a", 0, 2, True, True), ("c", 0, 2, True, False)],
                 [("a", 2, 1, False, True), ("c", 2, 3, True, False)],
                 [("a", 3, 1, False, True), ("c", 5, 3, True, False)],
                 [("a", 4, 1, False, True), ("c", 8, 1, True, True), ("g", 0, 2, True, True)]):
        out, _ = h.step()
        assert shape(out) == want
    assert g.is_group
    out, _ = h.step()                         # 2 tokens left: g (3 sequences) idles
    assert shape(out) == [("a", 5, 1, False, True), ("c", 9, 1, False, True)]
    assert out.num_batched_tokens == 2 and all(s.status is S.RUNNING for s in g.seqs)
    out, _ = h.step()                         # a finished (5 tokens): g runs whole
    assert shape(out) == [("c", 10, 1, False, True)] + [("g", 2, 1, False, True)] * 3
    h.drain()
    assert a.output_token_ids == reference_generate(prompt(2, 1), 5, 64)[0]
    assert [s.output_token_ids for s in g.seqs] == oracle(prompt(2, 3), 3, 64, 3)


def group_pressure(mode: str) -> Harness:
    # 4 blocks of 4: a (8 tokens) holds 2 and needs a 3rd at its first decode;
    # g's two samples share a partial block, whose copy-on-write then finds no room.
    return Harness(SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=64, max_model_len=64,
                                   preemption_mode=mode),
                   CacheConfig(block_size=4, num_gpu_blocks=4, num_cpu_blocks=8, watermark=0.0))


def test_a_group_is_swapped_out_and_in_whole_its_shared_block_copied_once():
    h = group_pressure("swap")
    a, g = h.add("a", prompt(8, 1), 6), h.add("g", prompt(3, 2), 6, n=2)
    h.step()                                  # a: 2 blocks; g: 1 block, then forked
    out, _ = h.step()                         # a takes the last block; g's copy has none
    assert out.preempted == ["g"] and shape(out) == [("a", 8, 1, False, True)]
    assert [s.status for s in g.seqs] == [S.SWAPPED] * 2
    assert len(out.blocks_to_swap_out) == 1 and h.sched.block_manager.num_free_cpu_blocks == 7
    while g.status is S.SWAPPED:
        out, _ = h.step()
    assert len(out.blocks_to_swap_in) == 1 and len(out.blocks_to_copy) == 1
    assert shape(out) == [("g", 3, 1, False, True)] * 2
    h.drain()
    assert [s.output_token_ids for s in g.seqs] == oracle(prompt(3, 2), 6, 64, 2)
    assert h.sched.block_manager.num_free_cpu_blocks == 8


def test_a_recomputed_group_re_prefills_each_sequence_in_one_step():
    h = group_pressure("recompute")
    a, g = h.add("a", prompt(8, 1), 6), h.add("g", prompt(3, 2), 6, n=2)
    h.step(), h.step()
    assert [s.status for s in g.seqs] == [S.WAITING] * 2
    assert [s.num_computed_tokens for s in g.seqs] == [0, 0]
    while g.status is S.WAITING:
        out, _ = h.step()
    # prompt + its one output each, as two prefills that sample one token each
    assert shape(out) == [("g", 0, 4, True, True)] * 2 and not out.num_samples
    h.drain()
    assert [s.output_token_ids for s in g.seqs] == oracle(prompt(3, 2), 6, 64, 2)
    assert h.sched.num_preemptions == {"recompute": 1, "swap": 0}


def test_abort_of_a_group_frees_every_sequence():
    h = tiny("swap", 4)
    g = h.add("g", prompt(5), 3, n=2)         # 2 x 2 blocks: the whole pool
    h.step(), h.step()
    assert h.sched.abort("g") and [s.finish_reason for s in g.seqs] == ["abort"] * 2
    assert h.sched.block_manager.num_free_gpu_blocks == 4 and h.sched.num_running_seqs == 0
