# Two entry points, each from nothing: `make demo` (trained captions, offline) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0's CPU wheel is what the test machines carry; a bare `torch` would pull a CUDA build.
TORCH ?= torch==2.13.0
UNAME := $(shell uname -s)
CPU_EXTRA := $(if $(filter Linux,$(UNAME)),cpu,)

.PHONY: setup setup-dev demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.core: $(BIN)/python pyproject.toml
	./scripts/install_system_deps.sh
	$(BIN)/python -m pip install -q -e ".[$(CPU_EXTRA)]"
	touch $@

$(VENV)/.dev: $(VENV)/.core
	./scripts/install_system_deps.sh --test
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[$(CPU_EXTRA),torch,app,dev]"
	touch $@

setup: $(VENV)/.core
setup-dev: $(VENV)/.dev

demo: setup
	$(BIN)/mlx-caption demo --out demo_out

test: setup-dev lint
	$(BIN)/python -m pytest -q -ra

lint: setup-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup-dev
	$(BIN)/mlx-caption bench --out benchmarks/results

clean:
	rm -rf $(VENV) demo_out .pytest_cache .ruff_cache
