# enclaveflow - one entry point for setting up, demonstrating, testing and measuring.
# Every target installs what it needs first, so each works on a fresh Debian 12 machine.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
SYSSTAMP := build/.sysdeps-stamp
BENCH ?= all
PYTEST_ARGS ?=
TESTS ?= tests

# System programs the tests and the demo use (docker-registry, skopeo, umoci, busybox, runc, bubblewrap, ...).
APT_PACKAGES := docker-registry apache2-utils skopeo umoci busybox-static runc bubblewrap softhsm2 gnupg postgresql graphviz
# A program from each package, to tell quickly whether anything is missing.
SYS_PROGRAMS := docker-registry htpasswd skopeo umoci busybox runc bwrap softhsm2-util gpg dot /usr/lib/postgresql/15/bin/initdb

.PHONY: install demo test bench lint clean sysdeps pydeps

install: sysdeps pydeps

sysdeps: $(SYSSTAMP)
$(SYSSTAMP): Makefile
	@missing=0; for p in $(SYS_PROGRAMS); do command -v $$p >/dev/null 2>&1 || [ -x $$p ] || missing=1; done; \
	if [ $$missing = 1 ]; then \
	  echo "installing system programs: $(APT_PACKAGES)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q --no-install-recommends $(APT_PACKAGES); \
	fi
	@mkdir -p build && touch $@

pydeps: $(STAMP)
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

# A confidential pod end to end on loopback (registry, KBS, encrypted + signed busybox, daemon, CRI);
# its enclave needs root, so it runs under sudo when make does not.
demo: install
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; $$SUDO $(VENV)/bin/enclaveflow pod-demo

# A free loopback port for the throwaway PostgreSQL cluster (nothing else may be using a fixed one).
FREE_PORT = $$($(PYTHON) -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# The suite needs a throwaway PostgreSQL cluster; it is started here and stopped whatever happens.
# Its data lives under /tmp: the postgres user must reach it, whatever folder the checkout is in.
test: install
	@set +e; dir=$$(mktemp -u /tmp/enclaveflow-pg.XXXXXX); \
	  url=$$(bash tests/support/pgcluster.sh start $$dir $(FREE_PORT)) || exit 1; \
	  ENCLAVEFLOW_TEST_PG_URL=$$url $(PY) -m pytest $(TESTS) $(PYTEST_ARGS); rc=$$?; \
	  bash tests/support/pgcluster.sh stop $$dir >/dev/null; rm -rf $$dir; exit $$rc

bench: install
	@set +e; dir=$$(mktemp -u /tmp/enclaveflow-pg.XXXXXX); \
	  url=$$(bash tests/support/pgcluster.sh start $$dir $(FREE_PORT)) || exit 1; \
	  ENCLAVEFLOW_TEST_PG_URL=$$url $(PY) tests/benchmarks/run.py $(BENCH); rc=$$?; \
	  bash tests/support/pgcluster.sh stop $$dir >/dev/null; rm -rf $$dir; exit $$rc

lint: install
	$(VENV)/bin/ruff check engine adapters tests
	$(VENV)/bin/mypy engine

clean:
	rm -rf build .pytest_cache .mypy_cache .ruff_cache
