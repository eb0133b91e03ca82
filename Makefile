# slotsweep: `make demo` trains on the built-in shapes dataset, `make test` runs the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch/torchvision are pinned here (this build machine serves these from disk); pyproject stays loose.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: help setup demo test test-all lint format bench dashboard wandb-sync clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup: $(STAMP)  ## create .venv and install torch + slotsweep[dev] (quick when already done)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev,coco,dashboard,tensorboard]' $(TORCH_PINS)
	touch $(STAMP)

demo: setup  ## short training on shapes: prints FG-ARI/mBO, writes mask pictures
	$(PY) src/train.py experiment=demo

# Two test processes at a time (pytest-xdist): many tests wait on SLURM polls and training
# subprocesses (benchmarks/results/test_parallel.md); TEST_JOBS=0 runs them one at a time.
TEST_JOBS ?= 2
test: setup  ## run the test suite (starts the local SLURM cluster when its packages exist)
	$(PY) -m pytest -q -m "not heavy" -n $(TEST_JOBS)

test-all: setup  ## the test suite plus the reference-sized models at their true size
	$(PY) -m pytest -q

lint: setup  ## ruff check + format check
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

format: setup  ## apply ruff fixes and formatting
	$(PY) -m ruff check --fix src tests benchmarks
	$(PY) -m ruff format src tests benchmarks

bench: setup  ## run the speed benchmarks, tables into benchmarks/results/
	$(PY) benchmarks/run_all.py

PORT ?= 8080
dashboard: setup  ## optuna-dashboard on a sweep's study: make dashboard SWEEP=<sweep dir> [PORT=8080]
	@test -n "$(SWEEP)" || { echo "error: SWEEP= is empty: make dashboard SWEEP=<the sweep's dir>" >&2; exit 2; }
	$(PY) -m slotsweep.sweeps.dashboard "$(SWEEP)" --port $(PORT)

RUNS_DIR ?= $(or $(SLOTSWEEP_RUNS_DIR),runs)
wandb-sync: setup  ## upload offline W&B runs under RUNS_DIR (needs an API key and network)
	@runs=$$(find $(RUNS_DIR) -regextype posix-extended -type d \
		-regex '.*/seed[0-9]+/logs/wandb/offline-run-[^/]+' 2>/dev/null | sort); \
	if [ -z "$$runs" ]; then echo "no offline W&B runs under $(RUNS_DIR)/*/seed*/logs/wandb/"; \
	else $(VENV)/bin/wandb sync --yes $$runs; fi

clean:  ## remove runs, caches and generated data (keeps .venv)
	rm -rf runs multirun outputs data/shapes data/features .pytest_cache
