# Two commands on a fresh Debian machine with Python 3.11+:
#   make run   — set everything up and start every Procfile process; UI on http://127.0.0.1:5000
#   make test  — the same bootstrap, then lint and the whole test suite
#   make test-fast — the in-process tests only (under a minute), while developing
#   make flask ARGS="tokens list --tenant demo" — an admin command, in make run's environment
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app wsgi
PROCESSES := web worker scheduler
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get

.PHONY: run flask test test-fast lint bench clean system-run system-test venv venv-dev

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

# What make run decided (its REDIS_URL, a DATABASE_URL given to it), for `make flask`.
RUN_ENV := instance/run.env
# The redis-server make run started, if it started one: it stops with make run.
REDIS_PID := instance/redis.pid

# However make run ends (Ctrl-C, a process that exits, an error), the EXIT trap stops that
# redis-server by its pid, after honcho has stopped the processes that use it.
STOP_REDIS := if pid=$$(cat $(REDIS_PID) 2>/dev/null); then rm -f $(REDIS_PID); \
  if [ "$$(ps -o comm= -p $$pid)" = redis-server ]; then kill $$pid; fi; \
  n=0; while [ $$n -lt 50 ] && ps -o stat= -p $$pid | grep -qv ^Z; do sleep 0.1; n=$$((n+1)); done; fi

run: venv system-run
	@mkdir -p instance
	@trap '$(STOP_REDIS)' EXIT; trap 'exit 130' INT TERM HUP; \
	REDIS_URL="$$($(FLASK) local-redis --pidfile $(REDIS_PID) --env-file $(RUN_ENV))" && export REDIS_URL && \
	$(FLASK) db upgrade && \
	$(FLASK) demo --login-file instance/demo-login.txt >/dev/null && \
	METRICS_TOKEN="$${METRICS_TOKEN:-$$($(FLASK) local-metrics-token --port $${PORT:-5000})}" && export METRICS_TOKEN && \
	{ [ ! -f instance/demo-login.txt ] || { echo; echo "  Script Runner: http://127.0.0.1:$${PORT:-5000}"; echo "  $$(cat instance/demo-login.txt)"; \
	  echo "  /metrics: Bearer token in instance/metrics_token, unless METRICS_TOKEN was set"; echo; }; } && \
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start -f Procfile -p $${PORT:-5000} $(PROCESSES)

# An admin command (README.md, "Administration") with the environment make run used:
#   make flask ARGS="tokens list --tenant demo"
flask: venv
	@[ ! -f $(RUN_ENV) ] || . ./$(RUN_ENV); export REDIS_URL DATABASE_URL; \
	[ -n "$$DATABASE_URL" ] || unset DATABASE_URL; [ -n "$$REDIS_URL" ] || unset REDIS_URL; \
	exec $(FLASK) $(ARGS)

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

# Every bench/*.py but bench/_*.py, the modules the benchmarks share.
bench: venv-dev system-test
	@command -v wrk >/dev/null || { $(APT) update -qq && $(APT) install -y -qq wrk; }
	@ls bench/*.py >/dev/null 2>&1 && for b in bench/[!_]*.py; do $(BIN)/python $$b || exit 1; done || echo "no benchmarks yet"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
