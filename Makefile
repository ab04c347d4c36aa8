# garagebook — see README.md. Every target installs what it needs into .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 3000
# Development-only admin token for `make run`; set your own in production.
ADMIN_TOKEN ?= dev-admin-token
# Development-only key of the manage links in mails, so they survive a restart of `make run`.
MANAGE_LINK_SECRET ?= dev-manage-link-secret
PYTEST_ARGS ?=

.PHONY: run install install-test test test-at test-concurrency bench worker chaos fuzz lint typecheck format audit clean

$(BIN)/garagebook: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.test-deps: $(BIN)/garagebook pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/garagebook
install-test: $(VENV)/.test-deps

## run: migrate, seed the demo garage and serve on the embedded default (SQLite, no Redis)
# `garagebook serve` prints the URL once it listens, and a Ctrl-C ends it with status 0.
run: install
	@$(BIN)/garagebook migrate
	@$(BIN)/garagebook seed
	@echo "admin token for this development server: $(ADMIN_TOKEN)"
	@API_DOCS=true ADMIN_TOKEN=$(ADMIN_TOKEN) MANAGE_LINK_SECRET=$(MANAGE_LINK_SECRET) $(BIN)/garagebook serve --host $(HOST) --port $(PORT)

## worker: deliver mails from the outbox (production shape; `make run` has one built in)
worker: install
	$(BIN)/garagebook worker

## test: lint, type-check and the whole test suite (needs PostgreSQL and Redis, see README)
test: install-test lint typecheck
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	$(BIN)/pytest -n 2 $(PYTEST_ARGS)

## test-at: the whole suite with the clock at AT (libfaketime; PostgreSQL keeps its own), to
## find tests that pass only at some times of day or week: make test-at AT="saturday 16:30"
AT ?= saturday 16:30
test-at: install-test
	@command -v faketime >/dev/null || (apt-get update -qq && apt-get install -y -qq faketime)
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)
	faketime -m "$(AT)" $(BIN)/pytest -n 2 $(PYTEST_ARGS)

## test-concurrency: N simultaneous bookings of one slot against a running server (see README)
test-concurrency: install
	$(BIN)/garagebook concurrency-test

## bench: booking throughput and latency against this machine's ceilings (PostgreSQL + Redis)
bench: install
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	@command -v redis-benchmark >/dev/null || apt-get install -y -qq redis-tools
	@command -v pgbench >/dev/null || apt-get install -y -qq postgresql-client
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.run $(BENCH_ARGS)

## chaos: the chaos scenarios (own PostgreSQL and Redis, killed on purpose) under longer load
chaos: install-test
	CHAOS_SECONDS=30 $(BIN)/pytest -s -p no:xdist tests/chaos

## fuzz: the property tests and schemathesis, with many more examples than in `make test`;
## then the schemathesis CLI (every phase, --checks all) against a served process on
## PostgreSQL + Redis, bounded by FUZZ_CLI_EXAMPLES cases per operation and FUZZ_CLI_SECONDS
FUZZ_CLI_EXAMPLES ?= 100
FUZZ_CLI_SECONDS ?= 600
fuzz: install-test
	STATEFUL_EXAMPLES=400 SCHEMATHESIS_EXAMPLES=1000 $(BIN)/pytest -p no:xdist tests/test_stateful.py tests/test_schema_fuzz.py
	SCHEMATHESIS_CLI_EXAMPLES=$(FUZZ_CLI_EXAMPLES) SCHEMATHESIS_CLI_SECONDS=$(FUZZ_CLI_SECONDS) $(BIN)/python -m tests.schemathesis_cli

lint: install-test
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: install-test
	$(BIN)/mypy

format: install-test
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

## audit: known vulnerabilities in the dependencies (needs internet access to the advisory DBs)
audit: install
	$(BIN)/pip install --quiet pip-audit
	$(BIN)/pip-audit

clean:
	rm -rf $(VENV) var/mail garagebook.db garagebook.db-wal garagebook.db-shm .pytest_cache .mypy_cache .ruff_cache
