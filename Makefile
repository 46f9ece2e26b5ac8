# Two entry points that work on a fresh machine with only Python 3.10+ and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow lint adversarial bench-sweep bench bench-check bench-inprocess bench-dynamics fixtures clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lstm-diag analyze

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# The tests marked slow (each starts a Dask LocalCluster); CI runs them after `make test`,
# in one process: a cluster's workers take the cores that a second test process would use.
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -n 0

lint: $(STAMP)
	$(BIN)/ruff check .

# Every class of hostile input (docs/bad-input.md) as its own process under a memory cap:
# exit code, time, memory, no file changed, no process left. About 1.5 minutes of CPU.
adversarial: $(STAMP)
	$(BIN)/python tests/adversarial/driver.py $(ADVERSARIAL_ARGS)

# Every contender in its own process, alternating; one-thread CPU time and default-threads
# wall time (docs/performance.md). bench-check: exit 1 if the fused kernels miss their budget
# (healthy and vanishing regimes).
bench: $(STAMP)
	$(BIN)/python benchmarks/isolated.py $(BENCH_ARGS)

bench-check: $(STAMP)
	$(BIN)/python benchmarks/isolated.py --check --shapes S,M,L,XL --dtypes float32,float64 $(BENCH_ARGS)

# The older single-process harness (floor, agreement checks, start-up times).
bench-inprocess: $(STAMP)
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

# The dynamics section against its budget, 0.4x engine.run, each contender in its own process
# (docs/dynamics.md, "Cost"); BENCH_ARGS=--parts: where its time goes.
bench-dynamics: $(STAMP)
	$(BIN)/python benchmarks/dynamics.py $(BENCH_ARGS)

# Sweep executors (in-process, 2 processes, Dask LocalCluster of 1 and 2 workers): runs/s,
# overhead per run, result and cache sizes, worker memory (docs/sweeps.md).
bench-sweep: $(STAMP)
	$(BIN)/python benchmarks/sweep.py $(BENCH_ARGS)

# Regenerate the PyTorch reference fixtures (needs `.venv/bin/pip install torch==2.13.0`).
fixtures: $(STAMP)
	$(BIN)/python tests/make_fixtures.py
	$(BIN)/python tests/make_explain_fixture.py
	$(BIN)/python tests/make_dynamics_fixtures.py
	$(BIN)/python tests/make_optim_fixtures.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
