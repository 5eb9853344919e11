# streamscore — every target does its own set-up; `make run` and `make test` work on a fresh machine.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STACK := deploy/local/stack.sh
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup stack-up stack-down stack-status stack-fetch run test test-unit test-integration \
        test-faults soak tools lint typecheck bench clean help

help:
	@echo "make run        - set up, start the local stack and run the whole pipeline"
	@echo "make test       - set up, start the local stack and run the tests"
	@echo "make setup | stack-up | stack-down | stack-status | lint | bench | soak"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

stack-fetch:
	$(STACK) fetch

stack-up:
	$(STACK) up

tools:
	deploy/local/compose-plugin.sh

stack-down:
	$(STACK) down

stack-status:
	$(STACK) status

run: setup stack-up
	$(BIN)/streamscore run $(RUN_ARGS)

test: setup stack-up tools
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: setup
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-integration: setup stack-up
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

test-faults: setup stack-up
	$(BIN)/pytest tests/faults $(PYTEST_ARGS)

soak: setup stack-up
	$(BIN)/pytest -m soak tests/faults $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: setup stack-up
	$(BIN)/pip install -q -e '.[dev,bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
