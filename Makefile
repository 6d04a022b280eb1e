# The commands the README names. Every target installs what it needs first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
FLASK := $(BIN)/flask --app imagestore

.PHONY: install run test lint format

install: $(VENV)/.installed

# Reinstall only when the dependency list changed (the package itself is an editable install).
$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: install
	$(FLASK) db upgrade
	$(FLASK) users bootstrap
	exec $(BIN)/gunicorn --no-control-socket --bind $(HOST):$(PORT) wsgi:app

test: install
	$(BIN)/python -m pytest --cov --cov-report=term $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .
