# Loupe: `make run` starts the product, `make test` runs every test. Both work on a fresh clone.
SHELL := /bin/bash
PYTHON_BIN ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run dev test install install-test browser lint bench migrate clean-var

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON_BIN) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	touch $@

$(VENV)/.test-installed: requirements-test.txt $(VENV)/.installed
	$(PIP) install -q -r requirements-test.txt
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.test-installed browser

# The browser tests drive Debian's Chromium (Playwright cannot download browsers here).
browser:
	@command -v /usr/bin/chromium >/dev/null || { \
	  echo "Installing Debian's chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "WARNING: could not install chromium; browser tests will fail under CI=true"; }

migrate: install
	$(PY) manage.py migrate --no-input -v0

# Serve on http://$(HOST):$(PORT) production-style: gunicorn with DEBUG off (the product's own
# error pages, static files through whitenoise), a Celery worker and Celery beat (its own
# process, holding var/celerybeat.lock: a second one exits). Ctrl-C, or one SIGTERM to the
# process group, stops all three within 10 s (deploy/run.sh).
run: migrate
	$(PY) manage.py loupe_setup
	$(PY) manage.py collectstatic --no-input -v0
	PY=$(PY) HOST=$(HOST) PORT=$(PORT) $(SHELL) deploy/run.sh

# Development: Django's autoreloading runserver with DEBUG on (no worker; run one beside it with
# `.venv/bin/python -m celery -A project worker -Q default,gpu,bulk --pool=solo` if you need tasks).
dev: migrate
	DEBUG=true $(PY) manage.py loupe_setup
	DEBUG=true $(PY) manage.py runserver $(HOST):$(PORT)

# The whole suite against this machine's PostgreSQL and Redis, plus the architecture contract,
# ruff (ruff.toml) and mypy (mypy.ini) over the product packages.
test: install-test
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy embeddings search training project
	$(VENV)/bin/bandit -q -r embeddings search training project -x '*/migrations/*'
	$(PY) manage.py makemigrations --check --dry-run -v0
	$(PY) -m pytest

lint: install-test
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy embeddings search training project

$(VENV)/.bench-installed: requirements-bench.txt $(VENV)/.test-installed
	$(PIP) install -q -r requirements-bench.txt
	touch $@

bench: install-test $(VENV)/.bench-installed
	$(PY) bench/run_all.py
