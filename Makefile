# One entry point for people and CI. Everything installs into .venv (torch's CPU build first,
# so pip never fetches a CUDA build), so a fresh machine needs only Python 3.11 and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)
TORCH ?= torch==2.13.0

.PHONY: install models run test unit integration lint bench clean

$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test,ops]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

models: install
	$(BIN)/autodep example-models models

run: models
	$(BIN)/autodep serve

test: install
	$(BIN)/python -m pytest

unit: install
	$(BIN)/python -m pytest tests/unit

integration: install
	$(BIN)/python -m pytest tests/integration

lint: install
	$(BIN)/python -m pip install --quiet ruff
	$(BIN)/ruff check autodep_celery web worker bench tests
	$(BIN)/ruff format --check autodep_celery web worker bench tests

bench: install
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/autodep bench

clean:
	rm -rf $(VENV) models build *.egg-info .pytest_cache
