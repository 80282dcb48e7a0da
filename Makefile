# The two commands of the README: `make demo` (local mode) and `make test`.
# Each installs what it needs into the repo by itself: .venv (pip), node_modules (the CDK
# CLI, npm), .build/lambda-deps (the functions' dependencies for Lambda on arm64) and the
# compiled decoder (native/, built with the ziglang wheel for this machine and for Lambda).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEPS := .build/lambda-deps
NATIVE := $(BIN)/.native
PIP := $(BIN)/python -m pip --disable-pip-version-check
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export CDK_DISABLE_VERSION_CHECK := 1
export CDK_DISABLE_CLI_TELEMETRY := true

.PHONY: test lint typecheck unit synth bench demo clean lambda-deps cdk-cli mariadb integ integ-snapshot

$(BIN)/.installed: requirements.txt functions/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements.txt
	$(PIP) install --quiet --no-deps -e .
	touch $@

# The decoder's compiled fast path, into the venv's site-packages (tests, bench, local mode).
$(NATIVE): native/ddbjson.c native/build.py $(BIN)/.installed
	$(BIN)/python native/build.py --out "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')"
	touch $@

# The functions' requirements as a Lambda layer for Python 3.12 on arm64: wheels only,
# chosen by platform, so no Docker and no compiler is needed.
$(DEPS)/.built: functions/requirements.txt native/ddbjson.c native/build.py $(BIN)/.installed
	rm -rf $(DEPS)
	$(PIP) install --quiet --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 --implementation cp --python-version 3.12 \
		--only-binary=:all: --target $(DEPS)/python -r functions/requirements.txt
	$(BIN)/python native/build.py --target aarch64-linux-gnu --out $(DEPS)/python
	rm -rf $(DEPS)/python/bin
	find $(DEPS) -name __pycache__ -prune -exec rm -rf {} +
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# MariaDB's server, for the schema function's MySQL-family catalog tests: Debian's package,
# installed once (the tests start their own server in a throwaway folder).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)
mariadb:
	@command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || { \
		echo "installing Debian's mariadb-server (tests/schema: MySQL catalogs)"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends mariadb-server >/dev/null; }

lambda-deps: $(DEPS)/.built
cdk-cli: node_modules/.installed

test: lint typecheck unit

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

unit: $(BIN)/.installed $(NATIVE) $(DEPS)/.built node_modules/.installed mariadb
	$(BIN)/pytest

# cdk.out/: one CloudFormation template per stack, checked by cdk-nag during synth.
synth: $(BIN)/.installed $(DEPS)/.built node_modules/.installed
	node_modules/.bin/cdk synth --quiet --no-notices

# The first real deploy (tests/integ, README "Deploying into an account"): prints its cost,
# deploys into the account and region of your credentials (AWS_REGION), asserts, destroys.
# `make test` checks its snapshot without an account; integ-snapshot rewrites the snapshot.
integ: $(BIN)/.installed $(DEPS)/.built node_modules/.installed
	$(BIN)/python tests/integ/run.py deploy

integ-snapshot: $(BIN)/.installed $(DEPS)/.built
	$(BIN)/python tests/integ/run.py snapshot

bench: $(BIN)/.installed $(NATIVE)
	$(BIN)/python bench/glue_bench.py
	$(BIN)/python bench/local_e2e.py
	$(BIN)/python bench/ddl_latency.py

# The whole data path on this machine: PostgreSQL (embedded; or DMSBUS_SOURCE_URL), the DMS
# stand-in, moto, and discovery/glue/consumers run by the local Lambda service.
# Settings: make demo DEMO_ARGS="--rate 500 --changes 10000".
DEMO_ARGS ?=
demo: $(BIN)/.installed $(NATIVE)
	$(BIN)/dmsbus demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) node_modules .build cdk.out .pytest_cache .mypy_cache .ruff_cache .hypothesis
