# Every target creates .venv and installs the project into it first, so on a fresh machine
# `make demo` and `make test` are the whole set-up.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Exits non-zero, saying why, unless the Python running it is new enough for duplex.
NEW_ENOUGH := import sys; v = ".".join(map(str, sys.version_info[:3])); \
	sys.exit(0 if sys.version_info[:2] >= (3, 11) else \
	f"duplex needs Python 3.11 or newer; $(PYTHON) is {v}: run make PYTHON=python3.11 (or newer)")

.PHONY: demo test test-loaded bench lint clean

# A venv counts once the install finished ($(STAMP)). One of a Python too old (a first run
# with the wrong one) is made again, and one made here whose install failed is removed, so
# no later `make` goes on with a half-made venv.
$(STAMP): pyproject.toml
	@if ! $(PY) -c '$(NEW_ENOUGH)' 2>/dev/null; then \
		$(PYTHON) -c '$(NEW_ENOUGH)' || exit 1; \
		echo "creating $(VENV) with $(PYTHON)"; \
		rm -rf $(VENV) && $(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); exit 1; }; \
		touch $(VENV)/.new; \
	fi
	@$(PY) -m pip install -q --upgrade pip && \
		$(PY) -m pip install -q -e '.[test,postgres,encrypted]' || \
		{ if [ -e $(VENV)/.new ]; then rm -rf $(VENV); fi; exit 1; }
	@rm -f $(VENV)/.new
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
	for name in $(BENCHES); do $(VENV)/bin/duplex bench $$name || exit $$?; done

# ruff (lint and format), then the layer contracts of pyproject.toml ([tool.importlinter]).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) build *.egg-info
