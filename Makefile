# Two-command quick start: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# `make run` installs what training and the report need (the package's dependencies);
# `make test` and `make lint` add the [dev] extra (pytest, ruff, reference libraries) and the
# [onnx] extra (onnx + onnxruntime, so the ONNX parity tests run).
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test lint install clean docker

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
# them in this process. A worker that crashes is not replaced (--max-worker-restart=0): the
# run fails naming the test it crashed on instead of hanging (pytest-xdist re-queues a dead
# worker's finished groups under --dist loadgroup and can wait on them for ever).
# pytest exits 5 when it collects no tests: treat that as a failure.
TEST_WORKERS ?= 2
test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --max-worker-restart=0 $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

lint: $(TEST_STAMP)
	$(BIN)/ruff check .

# The CUDA image (Dockerfile); `jaxtrade cloud sweep` launches this name by default.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= ghcr.io/jaxtrade/jaxtrade:$(VERSION)
docker:
	docker build -t $(IMAGE) .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
