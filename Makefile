# babylon-pipeline: install, test, and run the embedded profile on one machine with no services.
#
#   make test   install into .venv (and Debian's chromium) if needed, then run the test suite
#   make demo   the whole loop on the embedded profile: simulate 6 hours of 20 agents, score them (window_job),
#               build the tiny base model and train a LoRA version on them (minutes on a CPU), evaluate it,
#               start it as a 10 % canary, play the last hour routed by the deployment, print the watch's decision,
#               list the windows
#   make dev    the Dagster UI on http://127.0.0.1:3000 (DAGSTER_HOME: yours, else the embedded instance)
#   make dev-readonly   the same UI read-only on http://127.0.0.1:3001, for viewers: nothing can be launched,
#               switched on or off from it (docs/admin-panel.md; the UI has no login: put a proxy in front)
#   make prod-local   the production profile on this machine: the UI and dagster-daemon on the committed
#               dagster.yaml (Postgres instance from DAGSTER_PG_*), the store DATABASE_URL names, with the
#               tables created or adopted first (docs/production.md: the settings it needs)
#
# The install also puts Debian's chromium at /usr/bin/chromium when it is missing (apt-get, as root or
# through sudo): tests/test_admin_panel_browser.py drives it with Playwright.
# The install runs once per change of pyproject.toml (stamp file .venv/.installed).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0
PYTEST_ARGS ?= -q -n 2
HOST ?= 127.0.0.1
PORT ?= 3000
READONLY_PORT ?= 3001
CHROMIUM := /usr/bin/chromium

# DAGSTER_HOME as set by the caller, else the embedded instance's folder (written if missing).
# Without one, dagster commands run here would read ./dagster.yaml, the production instance.
EMBEDDED_DAGSTER_HOME = DAGSTER_HOME="$${DAGSTER_HOME:-$$($(BIN)/python -m babylon_pipeline.instance)}"; export DAGSTER_HOME

.PHONY: help install test demo dev dev-readonly prod-local

help:
	@sed -n 's/^#   //p' Makefile

install: $(STAMP) $(CHROMIUM)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first and on its own, so the CPU build is the one pip keeps; then the project, editable.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install -e '.[train,dev]'
	touch $@

# Playwright cannot download a browser here; Debian's package is the one the browser test launches.
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; else \
	  echo "$(CHROMIUM) is missing and cannot be installed without root or sudo: as root, run apt-get install -y chromium" >&2; \
	  exit 1; fi; \
	command -v apt-get >/dev/null || { echo "$(CHROMIUM) is missing and there is no apt-get: install Chromium there" >&2; exit 1; }; \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium || \
	{ echo "could not install chromium with apt-get: as root, run apt-get install -y chromium" >&2; exit 1; }

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	unset DATABASE_URL BABYLON_STORAGE_URL BABYLON_JUDGE_BASE_URL BABYLON_JUDGE_MODEL BABYLON_JUDGE_API_KEY; \
	$(EMBEDDED_DAGSTER_HOME); \
	$(BIN)/python -m babylon_pipeline.demo --hours 6 --agents 20 --seed 7 2> >(grep --line-buffered -v -e ' - dagster - DEBUG - ' -e Warning -e 'return fn' >&2); \
	$(BIN)/babylon windows

dev: $(STAMP)
	$(EMBEDDED_DAGSTER_HOME); \
	echo "DAGSTER_HOME=$$DAGSTER_HOME"; \
	exec $(BIN)/dagster dev -w workspace.yaml -h $(HOST) -p $(PORT)

dev-readonly: $(STAMP)
	$(EMBEDDED_DAGSTER_HOME); \
	echo "DAGSTER_HOME=$$DAGSTER_HOME (read-only)"; \
	exec $(BIN)/dagster-webserver --read-only -w workspace.yaml -h $(HOST) -p $(READONLY_PORT)

# DAGSTER_HOME as set by the caller, else .babylon-prod/dagster; the committed dagster.yaml is copied there.
prod-local: $(STAMP)
	@for name in DATABASE_URL DAGSTER_PG_HOST DAGSTER_PG_PORT DAGSTER_PG_USER DAGSTER_PG_PASSWORD DAGSTER_PG_DB; do \
	  [ -n "$${!name+set}" ] || { echo "prod-local: $$name is not set (docs/production.md lists the settings)" >&2; exit 1; }; \
	done
	export DAGSTER_HOME="$${DAGSTER_HOME:-$$PWD/.babylon-prod/dagster}"; \
	mkdir -p "$$DAGSTER_HOME" && cp dagster.yaml "$$DAGSTER_HOME/dagster.yaml"; \
	echo "DAGSTER_HOME=$$DAGSTER_HOME (production instance)"; \
	$(BIN)/babylon db upgrade; \
	exec $(BIN)/dagster dev -w workspace.yaml -h $(HOST) -p $(PORT)
