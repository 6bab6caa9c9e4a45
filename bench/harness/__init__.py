"""The benchmark harness behind `pagedlm bench ...` and the ci/ scripts.

results.py   pytest-benchmark JSON -> runs (samples per round, machine, fingerprints)
stats.py     medians, bootstrap intervals, Mann-Whitney U, Benjamini-Hochberg
compare.py   verdicts for a suite of benchmarks, base against head
report.py    the markdown verdict table; plots.py the PNG plots
suites.py    the suite registry; runner.py runs a suite through pytest-benchmark
gate.py      base and head in git worktrees, interleaved rounds; calibrate.py A/A runs
history.py   headline figures across committed results; matrix.py the conformance matrix
serving.py   TTFT / TPOT / ITL / E2EL, arrivals, goodput; serving_sim.py the scheduler on a simulated clock
plant.py     a known slowdown planted into real JSON; synthetic.py JSON with a known truth (tests)
"""
