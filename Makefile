# Every target creates .venv and installs the project into it first, so on a fresh machine
# `make demo` and `make test` are the whole set-up.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-loaded bench lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,postgres,encrypted]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/duplex demo

test: $(STAMP)
	$(PY) -m pytest

# The suite RUNS times while busy loops hold every core: a test that fails only here has a race.
RUNS ?= 1
test-loaded: $(STAMP)
	$(PY) tests/loaded.py --runs $(RUNS)

BENCHES := limits actors server server_abuse messaging connect recovery group_join

bench: $(STAMP)
	for name in $(BENCHES); do $(PY) -m bench.$$name || exit 1; done

# ruff, then the layer contracts of pyproject.toml ([tool.importlinter]).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) build *.egg-info
