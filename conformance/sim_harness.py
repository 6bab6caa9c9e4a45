"""A scheduler driven step by step by hand over the simulated model (worked examples)."""
from __future__ import annotations

from conformance.sim_driver import Arrival, SimKV, _snapshot, check_step, expected_infeasible
from conformance.sim_model import kv_chain, kv_of
from engine.core.config import CacheConfig, SchedulerConfig
from engine.core.scheduler import Scheduler


class Harness:
    """A scheduler plus the simulated model; step() checks and runs one step."""

    def __init__(self, cfg: SchedulerConfig, cache: CacheConfig) -> None:
        self.sched, self.kv, self.chains = Scheduler(cfg, cache), SimKV(cache), {}
        self.cfg, self.cache, self.infeasible = cfg, cache, set()

    def add(self, rid: str, prompt: list[int], max_tokens: int = 1000, **kw):
        arrival = Arrival(0, rid, tuple(prompt), max_tokens, n=kw.get("n", 1))
        if expected_infeasible(arrival, self.cfg, self.cache):
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
                for child in s.request.seqs:            # forked by this update
                    self.chains.setdefault(child.seq_id, kv_chain(child.token_ids))
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
