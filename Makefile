# Two-command quick start: `make run` and `make test` (see README.md).
PYTHON ?= python3
# Python caches the bytecode of the modules it imports (the venv is installed with
# --no-compile): where PYTHONDONTWRITEBYTECODE is set, every process (each test worker and
# each `jaxtrade` subprocess of the tests) would compile jax, flax, polars' Python and the rest
# from source again, ~6 s per process on 2 cores. An empty value lets Python write the cache.
export PYTHONDONTWRITEBYTECODE :=
# bash: `make test` reads pytest's exit status through a pipe (PIPESTATUS).
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
# `make run` installs what training and the report need (the package's dependencies);
# `make test` and `make lint` add the [dev] extra (pytest, ruff, reference libraries) and the
# [onnx] extra (onnx + onnxruntime, so the ONNX parity tests run).
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test lint install clean docker durations

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# --no-compile: pip would byte-compile every module of every package (about 250 MiB of
# __pycache__ and a good part of the install time on 2 cores); Python compiles the modules a
# run imports when it first imports them.
$(RUN_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet --no-compile -e .
	touch $(RUN_STAMP)

$(TEST_STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,onnx]"
	touch $(TEST_STAMP)

install: $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/jaxtrade train $(ARGS)

# Tests run on TEST_WORKERS pytest-xdist workers (2 fits a 2-core CI machine; each worker
# holds up to ~4 GB), a module per worker at a time (tests/conftest.py). TEST_WORKERS=0 runs
# them in this process. XLA:CPU (jaxlib 0.10.2) segfaults or aborts now and then inside a
# compile, taking a worker down; pytest-xdist cannot replace a worker under its module
# schedulers (`--dist loadfile`; seen with loadgroup: the run waits for ever), so a crash
# stops the run once the other
# workers finish their module (tests/conftest.py), and the next run takes, in fresh workers,
# every test that has not passed yet: up to TEST_RUNS runs, the last one's result is the
# result. At the end: the slowest modules' worker seconds, and the Python stacks of crashed
# workers (faulthandler) again. pytest exits 5 when it collects no tests: treat that as a
# failure.
# The options take their file with `=`: as a separate word pytest reads an existing file as a
# test path before tests/conftest.py has defined the option, and refuses the option.
TEST_WORKERS ?= 2
TEST_RUNS ?= 3
TEST_RECORD ?= .pytest_cache/jaxtrade
PASSED = $(TEST_RECORD)-passed.txt
DURATIONS = $(TEST_RECORD)-durations.txt
# The trained runs tests share (tests/shared_runs.py), kept over the reruns of one `make test`.
SHARED_RUNS = $(abspath $(TEST_RECORD))-shared
# jaxtrade's caches (the persistent compilation cache above all) for the runs of one `make test`:
# each `make test` starts with none, as a fresh machine does, and leaves ~/.cache alone.
TEST_CACHE = $(abspath $(TEST_RECORD))-cache
test: $(TEST_STAMP)
	@mkdir -p $(dir $(TEST_RECORD)) && rm -f $(PASSED) $(DURATIONS) $(TEST_RECORD)-run-*.log
	@rm -rf $(SHARED_RUNS) $(TEST_CACHE)
	@touch $(PASSED) $(DURATIONS)
	@select=""; for run in $$(seq 1 $(TEST_RUNS)); do \
	  log=$(TEST_RECORD)-run-$$run.log; \
	  JAXTRADE_SHARED_RUNS=$(SHARED_RUNS) JAXTRADE_CACHE_DIR=$(TEST_CACHE) $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder \
	    --max-worker-restart=0 --record-passed=$(PASSED) --record-durations=$(DURATIONS) \
	    $$select $(PYTEST_ARGS) 2>&1 | tee $$log; \
	  rc=$${PIPESTATUS[0]}; \
	  if [ $$rc -eq 0 ] || ! grep -q "crashed while running" $$log; then break; fi; \
	  if [ $$run -lt $(TEST_RUNS) ]; then \
	    echo "a test worker crashed: running every test that did not pass once more" >&2; fi; \
	  select="--rerun-unpassed=$(PASSED)"; \
	done; \
	echo "worker seconds per test module, slowest first (all runs; $(DURATIONS)):"; \
	awk '{split($$3, p, "::"); t[p[1]] += $$1; s += $$1} END {for (m in t) \
	  printf "%8.1f  %s\n", t[m], m; printf "%8.1f  (all)\n", s}' $(DURATIONS) \
	  | sort -rn | head -16; \
	if grep -q "Fatal Python error" $(TEST_RECORD)-run-*.log; then \
	  echo "where the crashed workers were (faulthandler):" >&2; \
	  sed -n '/^Fatal Python error/,/^Extension modules/p' $(TEST_RECORD)-run-*.log \
	    | grep -v -e /pluggy/ -e /_pytest/ -e /execnet/ -e /threading.py -e "^Extension" >&2; fi; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

# tests/durations.txt (seconds per test, all phases) from the last `make test`: tests/conftest.py
# starts the longest groups first.
durations:
	awk '{t[$$3] += $$1} END {for (n in t) printf "%.1f %s\n", t[n], n}' $(DURATIONS) \
	  | sort -k2 > tests/durations.txt

lint: $(TEST_STAMP)
	$(BIN)/ruff check .

# The CUDA image (Dockerfile); `jaxtrade cloud sweep` launches this name by default.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= ghcr.io/jaxtrade/jaxtrade:$(VERSION)
docker:
	docker build -t $(IMAGE) .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
