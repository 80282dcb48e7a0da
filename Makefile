# The two commands of the README: `make demo` (local mode, coming with issue 5) and `make test`.
# Each installs what it needs into the repo (.venv) by itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test lint typecheck unit bench demo clean

$(BIN)/.installed: requirements.txt functions/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

test: lint typecheck unit

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

unit: $(BIN)/.installed
	$(BIN)/pytest

bench: $(BIN)/.installed
	$(BIN)/python bench/glue_bench.py

demo:
	@echo "make demo: local mode (PostgreSQL -> DMS stand-in -> moto -> glue -> consumers) is not built yet;"
	@echo "it arrives with issue 5. Until then: make test, make bench."
	@exit 2

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
