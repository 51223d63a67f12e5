# vscand — the README's commands. Every target installs what it needs first.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
APT_PACKAGES := nmap-common nmap ndiff libpcre3 redis-server libxml2-utils
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export VSCAND_CACHE_DIR ?= $(CURDIR)/.cache/vscand

.PHONY: all system-deps venv test lint bench clean

all: test

# Debian packages: Nmap's data files (the probe database), nmap and ndiff (the
# oracle), libpcre3 (the regex library Nmap uses), redis-server (daemon tests).
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,accel]'
	touch $@

venv: system-deps $(VENV)/.installed

test: venv
	$(PY) -b -m pytest -q $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check vscand tests benchmarks
	$(VENV)/bin/ruff format --check vscand tests benchmarks
	$(VENV)/bin/mypy vscand

bench: venv
	$(PY) benchmarks/match.py

clean:
	rm -rf $(VENV) .cache build *.egg-info
