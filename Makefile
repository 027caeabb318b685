# Two commands on a fresh Debian machine with Python 3.11+:
#   make run   — set everything up and start every Procfile process; UI on http://127.0.0.1:5000
#   make test  — the same bootstrap, then lint and the whole test suite
#   make test-fast — the in-process tests only (under a minute), while developing
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app wsgi
PROCESSES := web worker scheduler
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get

.PHONY: run test test-fast lint bench clean system-run system-test venv venv-dev

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV) || { $(APT) update -qq && $(APT) install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: $(VENV)/.runtime
venv-dev: $(VENV)/.dev

# System packages, installed with apt-get only when missing.
system-run:
	@command -v redis-server >/dev/null || { $(APT) update -qq && $(APT) install -y -qq redis-server; }

system-test: system-run
	@command -v chromium >/dev/null || { $(APT) update -qq && $(APT) install -y -qq chromium; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(APT) update -qq && $(APT) install -y -qq postgresql; }
	@command -v promtool >/dev/null || { $(APT) update -qq && $(APT) install -y -qq prometheus; }

run: venv system-run
	@mkdir -p instance
	@REDIS_URL="$$($(FLASK) local-redis)" && export REDIS_URL && \
	$(FLASK) db upgrade && \
	$(FLASK) demo --login-file instance/demo-login.txt >/dev/null && \
	{ [ ! -f instance/demo-login.txt ] || { echo; echo "  Script Runner: http://127.0.0.1:$${PORT:-5000}"; echo "  $$(cat instance/demo-login.txt)"; echo; }; } && \
	PATH="$(CURDIR)/$(BIN):$$PATH" exec $(BIN)/honcho start -f Procfile -p $${PORT:-5000} $(PROCESSES)

lint: venv-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Most of the suite waits on processes and clocks, not on the CPU: three pytest workers
# (pytest-xdist) keep two cores busy. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 3

test: venv-dev system-test lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS)

# The in-process tier: no worker, scheduler, web server, sandbox or browser; SQLite only.
test-fast: venv-dev system-test
	TEST_DATABASES=sqlite $(BIN)/python -m pytest -m "not slow" -q -n 2

bench: venv-dev system-test
	@command -v wrk >/dev/null || { $(APT) update -qq && $(APT) install -y -qq wrk; }
	@ls bench/*.py >/dev/null 2>&1 && for b in bench/*.py; do $(BIN)/python $$b || exit 1; done || echo "no benchmarks yet"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
