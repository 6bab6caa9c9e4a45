"""The benchmark harness behind `pagedlm bench ...` and the ci/ scripts.

results.py   pytest-benchmark JSON -> runs (samples per round, machine, fingerprints)
stats.py     medians, bootstrap intervals, Mann-Whitney U, Benjamini-Hochberg
compare.py   verdicts for a suite of benchmarks, base against head
markdown.py  the markdown verdict table; plots.py the PNG plots (distributions, roofline)
plots_engine.py  the engine's tokens/s against its peer per batch size
figures.py   which plots each suite's records get (named in suites.py), for compare and history
suites.py    the suite registry; runner.py runs a suite through pytest-benchmark
gate.py      base and head in git worktrees, interleaved rounds; calibrate.py A/A runs
history.py   headline figures across committed results; matrix.py the conformance matrix
serving.py   TTFT / TPOT / ITL / E2EL, arrivals, goodput; workloads.py random and prefix-sharing requests
serving_sim.py  a workload on the scheduler with a simulated clock; serving_engine.py on the real LLMEngine
plant.py     a known slowdown planted into real JSON; synthetic.py JSON with a known truth (tests)
"""
