# Two entry points for newcomers: `make run` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench bench-quick lint fmt clean

# Said step by step: on a clean machine this takes a couple of minutes, and pip's own
# lines show which package it is at.
$(STAMP): pyproject.toml
	@echo "==> setting up $(VENV) (first run, or pyproject.toml changed): a couple of minutes, once"
	@echo "==> 1/3 creating the virtual environment $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	@echo "==> 2/3 upgrading pip"
	$(BIN)/pip install --quiet --upgrade pip
	@echo "==> 3/3 installing slotledger and its development tools (pip lists each package)"
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)
	@echo "==> $(VENV) is ready"

run: $(STAMP)
	@echo "==> starting the demo: slotledger serve --demo (a fresh demo store, a fake Coolify, simulated bots)"
	$(BIN)/slotledger serve --demo

test: $(STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.run --quick

lint: $(STAMP)
	$(BIN)/ruff check ledger projections tests
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

fmt: $(STAMP)
	$(BIN)/ruff format ledger projections tests
	$(BIN)/ruff check --fix ledger projections tests

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .slotledger
