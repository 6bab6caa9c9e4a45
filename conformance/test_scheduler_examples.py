"""Scheduler worked examples (vLLM's and textbook ones), each step checked by hand."""
from __future__ import annotations

import pytest

from conformance.sim_driver import Arrival, SimKV, check_step, expected_infeasible, _snapshot
from conformance.sim_model import kv_chain, kv_of, reference_generate
from engine.core.config import CacheConfig, SchedulerConfig
from engine.core.scheduler import Scheduler
from engine.core.sequence import SequenceStatus as S


class Harness:
    """A scheduler plus the simulated model; step() checks and runs one step."""

    def __init__(self, cfg: SchedulerConfig, cache: CacheConfig) -> None:
        self.sched, self.kv, self.chains = Scheduler(cfg, cache), SimKV(cache), {}
        self.cfg, self.cache, self.infeasible = cfg, cache, set()

    def add(self, rid: str, prompt: list[int], max_tokens: int = 1000, **kw):
        if expected_infeasible(Arrival(0, rid, tuple(prompt), max_tokens), self.cfg, self.cache):
            self.infeasible.add(rid)
        req = self.sched.add_request(rid, prompt, max_tokens, **kw)
        self.chains[req.seq.seq_id] = kv_chain(prompt)
        return req

    def step(self):
        before = _snapshot(self.sched)
        out = self.sched.schedule()
        check_step(self.sched, out, before, self.infeasible)
        sampled = self.kv.run(self.sched, out, self.chains)
        finished = self.sched.update(out, sampled)
        for s in out.scheduled:
            if s.do_sample:
                chain = self.chains[s.seq.seq_id]
                chain.append(kv_of(chain[-1], s.seq.token_ids[-1]))
        return out, finished

    def drain(self, limit: int = 500) -> None:
        for _ in range(limit):
            if not self.sched.has_unfinished():
                return
            self.step()
        raise AssertionError("did not drain")


def shape(out):
    """(request, start, tokens, is_prompt, do_sample) per scheduled sequence."""
    return [(s.request.request_id, s.start, s.num_new_tokens, s.is_prompt, s.do_sample)
            for s in out.scheduled]


def prompt(n: int, base: int = 1) -> list[int]:
    return [(base + 7 * i) % 37 + 1 for i in range(n)]


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
