# Trickle: `make run` for the demo stack on SQLite, `make test` for the whole suite on PostgreSQL and SQLite.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PG_URL ?= postgres://postgres@127.0.0.1:5432/trickle
SQLITE_URL ?= sqlite:///$(CURDIR)/var/trickle-test.sqlite3
PYTEST_WORKERS ?= 2
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install run demo test test-pg test-sqlite test-faults lint format bench services browser clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

# Redis is the broker and rate limiter: say so in one line rather than let Celery retry forever.
services: install
	@$(PY) tools/check_services.py $(if $(filter test%,$(MAKECMDGOALS)),--postgres,)

demo: install
	@mkdir -p var
	$(PY) manage.py migrate --no-input -v 0
	$(PY) manage.py demo

run: services demo
	$(PY) -m honcho -f Procfile start

# Debian's Chromium for the browser tests (Playwright's own browser download is not used).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "chromium missing: browser tests will be skipped"; }

test: install services browser
	$(MAKE) --no-print-directory test-pg
	$(MAKE) --no-print-directory test-sqlite

test-pg:
	DATABASE_URL=$(PG_URL) $(PY) -m pytest -n $(PYTEST_WORKERS) --create-db -m "not slow" $(ARGS)

test-sqlite:
	DATABASE_URL=$(SQLITE_URL) $(PY) -m pytest -n $(PYTEST_WORKERS) --create-db -m "not slow" $(ARGS)

# The long fault scenarios (docs/faults.md), PostgreSQL only, one at a time; ends with the table.
test-faults: install services
	DATABASE_URL=$(PG_URL) $(PY) -m pytest tests/faults -m slow -p no:xdist --create-db --durations=0 $(ARGS)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

bench: install services
	$(PY) bench/api.py
	$(PY) bench/engine.py

clean:
	rm -rf var/*.sqlite3* .pytest_cache
