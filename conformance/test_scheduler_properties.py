"""Scheduler properties over Hypothesis-drawn workloads, run on the simulated model.

sim_driver.drive checks after every step: budgets, queues, slots, preemption
order, swapped-before-new, strict FCFS, ignored == infeasible; at the end: the
step bound, every output equal to the oracle's, every block free.
"""
from __future__ import annotations

from dataclasses import replace

from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from conformance.sim_driver import Arrival, drive, expected_infeasible, worst_len
from conformance.sim_model import VOCAB
from engine.core.config import CacheConfig, SchedulerConfig

tokens = st.integers(0, VOCAB - 1)


@st.composite
def arrivals(draw, max_requests: int = 8, widths=st.sampled_from([1, 1, 1, 2, 3]),
             part: int = 24, max_new: int = 24) -> list[Arrival]:
    """Requests arriving at random steps; some prompts share a prefix (to hit
    the prefix cache); some stop on token 0 (EOS); some sample n = 2 or 3
    sequences (parallel sampling)."""
    prefixes = draw(st.lists(st.lists(tokens, min_size=1, max_size=part), min_size=1, max_size=2))
    out = []
    for i in range(draw(st.integers(1, max_requests))):
        base = draw(st.sampled_from([[]] + prefixes))
        tail = draw(st.lists(tokens, min_size=0 if base else 1, max_size=part))
        out.append(Arrival(step=draw(st.integers(0, 12)), request_id=f"r{i}",
                           prompt=tuple(base + tail), max_tokens=draw(st.integers(1, max_new)),
                           eos=draw(st.sampled_from([(), (0,)])), n=draw(widths)))
    return out


@st.composite
def configs(draw, stream: list[Arrival]) -> tuple[SchedulerConfig, CacheConfig]:
    """Mostly a pool that holds the longest request and little more (pressure,
    with most requests feasible); sometimes pools or budgets too small."""
    longest_prompt = max(len(a.prompt) for a in stream)
    chunked = draw(st.booleans())
    budget = (draw(st.one_of(st.integers(1, 16), st.integers(16, 96))) if chunked
              else max(1, longest_prompt + draw(st.integers(-4, 48))))
    cfg = SchedulerConfig(
        max_num_seqs=draw(st.integers(1, 6)), max_num_batched_tokens=budget,
        max_model_len=max(1, longest_prompt + draw(st.integers(-4, 40))),
        enable_chunked_prefill=chunked,
        preemption_mode=draw(st.sampled_from(["recompute", "swap"])))
    block_size = draw(st.sampled_from([1, 2, 4, 8]))
    longest = max(a.n * -(-worst_len(a, cfg) // block_size) for a in stream)
    cache = CacheConfig(
        block_size=block_size,
        num_gpu_blocks=max(1, longest + draw(st.integers(-2, max(1, longest // 2)))),
        num_cpu_blocks=draw(st.integers(0, 2 * longest)),
        enable_prefix_caching=draw(st.booleans()),
        watermark=draw(st.sampled_from([0.0, 0.0, 0.1])))
    return cfg, cache


@st.composite
def abort_plans(draw, requests: list[Arrival]) -> dict[int, list[str]]:
    """Aborts at random steps, of drawn requests or of an id never added."""
    ids = [a.request_id for a in requests] + ["ghost"]
    plan: dict[int, list[str]] = {}
    for _ in range(draw(st.integers(0, 3))):
        plan.setdefault(draw(st.integers(0, 40)), []).append(draw(st.sampled_from(ids)))
    return plan


# Cheap examples (ms each): twenty times the profile's count.
@settings(max_examples=20 * settings.default.max_examples)
@given(data=st.data())
def test_random_workloads_drain_with_every_step_checked(data):
    stream = data.draw(arrivals())
    cfg, cache = data.draw(configs(stream))
    aborts = data.draw(abort_plans(stream))
    seed = data.draw(st.integers(0, 2**16))
    res = drive(cfg, cache, stream, aborts, seed=seed, abort_in_flight=0.05)
    for kind, n in res.preemptions.items():
        event(f"{kind} preemption: {'yes' if n else 'no'}")
    event(f"finished normally: {sum(w in ('stop', 'length') for w in res.reasons.values())}")
    ignored = {rid for rid, why in res.reasons.items() if why == "ignored"}
    assert ignored == {a.request_id for a in stream if expected_infeasible(a, cfg, cache)}
    assert res.steps_after_last_arrival <= res.bound


def _pressure_config(mode: str, chunked: bool, budget: int, prefix: bool):
    # A pool that holds one request's longest sequence, and little more.
    return (SchedulerConfig(max_num_seqs=4, max_num_batched_tokens=budget, max_model_len=48,
                            enable_chunked_prefill=chunked, preemption_mode=mode),
            CacheConfig(block_size=4, num_gpu_blocks=12, num_cpu_blocks=6,
                        enable_prefix_caching=prefix, watermark=0.0))


SCHEDULES = [("recompute", False, 48, False), ("swap", False, 48, True),
             ("recompute", True, 5, True), ("swap", True, 13, False)]


@settings(max_examples=8 * settings.default.max_examples)
@example(stream=[Arrival(0, f"r{i}", tuple(range(i, i + 9)), 16) for i in range(6)])
@given(stream=arrivals(max_requests=6))
def test_outputs_do_not_depend_on_the_schedule(stream):
    """Same requests under recompute/swap, chunked/whole, tiny/large budgets,
    prefix caching on/off: every request outputs the same tokens (and the
    oracle's), so preemption and chunking lose and duplicate nothing."""
    results = [drive(*_pressure_config(*s), stream) for s in SCHEDULES]
    event(f"preempted: {'yes' if any(sum(r.preemptions.values()) for r in results) else 'no'}")
    for a in stream:
        finished = [(r.outputs[a.request_id], r.reasons[a.request_id]) for r in results
                    if r.reasons[a.request_id] != "ignored"]
        assert all(f == finished[0] for f in finished), f"{a.request_id}: {finished}"


def test_pressure_schedules_really_preempt_both_ways():
    """The invariance test is only as strong as the preemption it causes."""
    stream = [Arrival(0, f"r{i}", tuple(range(i, i + 9)), 16) for i in range(6)]
    seen = {"recompute": 0, "swap": 0}
    for s in SCHEDULES:
        for mode, n in drive(*_pressure_config(*s), stream).preemptions.items():
            seen[mode] += n
    assert seen["recompute"] > 0 and seen["swap"] > 0


def _group_config(mode: str, chunked: bool, budget: int, prefix: bool,
                  stream: list[Arrival]):
    # Room for the largest request alone (n x its longest sequence) and 2 blocks more.
    cfg = SchedulerConfig(max_num_seqs=6, max_num_batched_tokens=budget, max_model_len=40,
                          enable_chunked_prefill=chunked, preemption_mode=mode)
    largest = max(a.n * -(-worst_len(a, cfg) // 4) for a in stream)
    return cfg, CacheConfig(block_size=4, num_gpu_blocks=largest + 2, num_cpu_blocks=12,
                            enable_prefix_caching=prefix, watermark=0.0)


GROUP_STREAM = [Arrival(i // 2, f"r{i}", tuple(range(i, i + 5 + i % 4)), 12, n=1 + i % 3)
                for i in range(6)]


@settings(max_examples=settings.default.max_examples)
@example(stream=GROUP_STREAM)
@given(stream=arrivals(max_requests=5, widths=st.sampled_from([1, 2, 3]), part=6, max_new=12))
def test_parallel_sampling_outputs_do_not_depend_on_the_schedule(stream):
    """Groups of 1..3 sequences under recompute/swap, chunked/whole, prefix
    caching on/off: every sequence outputs its oracle's tokens (drive checks
    that, and that every block comes back), whatever the schedule."""
    stream = [replace(a, step=a.step // 4) for a in stream]     # arrivals close together
    results = [drive(*_group_config(*s, stream), stream) for s in SCHEDULES]
    for mode in ("recompute", "swap"):
        hit = any(r.group_preemptions[mode] for r in results)
        event(f"group preempted by {mode}: {'yes' if hit else 'no'}")
    event(f"groups that ran: {sum(a.n > 1 and results[0].reasons[a.request_id] != 'ignored' for a in stream)}")
    for a in stream:
        finished = [r.outputs[a.request_id] for r in results
                    if r.reasons[a.request_id] != "ignored"]
        assert all(f == finished[0] for f in finished), f"{a.request_id}: {finished}"


def test_group_pressure_really_preempts_groups_both_ways():
    seen = {"recompute": 0, "swap": 0}
    for s in SCHEDULES:
        for mode, n in drive(*_group_config(*s, GROUP_STREAM),
                             GROUP_STREAM).group_preemptions.items():
            seen[mode] += n
    assert seen["recompute"] > 0 and seen["swap"] > 0
