# Two commands: `make run` (set up and serve on 127.0.0.1:8000) and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LINTED := $(wildcard app tests migrations bench examples)
export EID_DATABASE_URL ?= sqlite+aiosqlite:///./var/eid.db

.PHONY: setup run migrate seed test lint typecheck pytest openapi bench demo clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

migrate: setup
	$(BIN)/eid migrate

seed: migrate
	$(BIN)/eid seed-demo

run: seed
	$(BIN)/eid serve --host 127.0.0.1 --port 8000

lint: setup
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

typecheck: setup
	$(BIN)/mypy app

pytest: setup
	$(BIN)/pytest
	cd examples/portal-integration && ../../$(BIN)/pytest -q

demo: setup
	$(BIN)/eid serve --demo --host 127.0.0.1 --port 8000

test: lint typecheck pytest

openapi: setup
	$(BIN)/python -m app.openapi > openapi/openapi.json

bench: setup
	@command -v wrk >/dev/null || { apt-get update && apt-get install -y wrk; }
	$(BIN)/python bench/registry_import.py
	$(BIN)/python bench/token.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
