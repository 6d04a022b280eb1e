# The commands the README names. Every target installs what it needs first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# pytest-xdist workers: one per CPU, at most four (each makes its own template database and,
# for the S3 tests, starts its own SeaweedFS); PYTEST_WORKERS=0 runs the suite in one process.
PYTEST_WORKERS ?= auto
PYTEST := $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --maxprocesses 4
FLASK := $(BIN)/flask --app imagestore

.PHONY: install install-test run test test-fast lint format bench bench-quick

# What `make run` needs: the package and what it runs on.
install: $(VENV)/.installed
# What the tests, the linters and the bench need besides: the `test` extra of setup.cfg.
install-test: $(VENV)/.installed-test

# Reinstall only when the dependency list changed (the package itself is an editable install).
$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# nginx on HOST:PORT in front of gunicorn on a unix socket (imagestore/serve.py, docs/deploy.md).
run: install nginx
	$(FLASK) db upgrade
	$(FLASK) users bootstrap
	HOST=$(HOST) PORT=$(PORT) exec $(BIN)/python -m imagestore.serve

test: install-test
	$(PYTEST) --cov --cov-report=term $(PYTEST_ARGS)

# The quick loop: `make test` without the tests marked slow (a live server, nginx, a browser, a
# fuzzer: over about 2 s each) or service (PostgreSQL, SeaweedFS, Redis, nginx, chromium), and
# without coverage, which costs a third more time.
test-fast: install-test
	$(PYTEST) -m "not slow and not service" $(PYTEST_ARGS)

lint: install-test
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

format: install-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Load test on this machine (loopback only); writes bench/RESULTS.md. `make bench-quick`: a short
# run that prints its table and keeps RESULTS.md as it is. BENCH_ARGS passes options (--help).
bench: install-test wrk
	$(BIN)/python bench/bench.py $(BENCH_ARGS)

bench-quick: install-test wrk
	$(BIN)/python bench/bench.py --quick $(BENCH_ARGS)

.PHONY: wrk
wrk:
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }

# Debian's nginx package starts a server on port 80 as soon as it is installed, and at every
# boot: a policy-rc.d that refuses every service start (unless one is there already) holds it
# back during the install, and the service is disabled afterwards. `make run` starts its own.
.PHONY: nginx
nginx:
	@PATH="$$PATH:/usr/sbin:/sbin"; command -v nginx >/dev/null || { \
	    policy=/usr/sbin/policy-rc.d; \
	    if [ ! -e $$policy ]; then \
	        trap "rm -f $$policy" EXIT; trap "exit 130" INT TERM; \
	        printf '#!/bin/sh\nexit 101\n' >$$policy && chmod 755 $$policy; \
	    fi; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx \
	    && { systemctl disable nginx || update-rc.d nginx disable || true; } >/dev/null 2>&1; \
	}
