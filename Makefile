# The two set-up commands are `make demo` (a run against the built-in sandbox) and
# `make test` (the whole suite). Both create .venv on first use; only python3 is needed.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint typecheck check bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)  ## add the sample sessions to playlists in a local sandbox; no Datadog account
	$(BIN)/rum-playlist-ingest run sample_inputs/sessions.csv --sandbox --report out/demo-report.json

test: $(STAMP)  ## the whole test suite (what CI runs)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

bench: $(STAMP)  ## all benchmarks; see bench/README.md for each one alone
	@# Each exits 1 when it misses its target: run them all, then say which did.
	@missed=""; \
	for bench in ratelimit.py throughput.py memory.py "memory.py --no-journal" journal.py rerun.py overhead.py "overhead.py --http"; do \
		$(BIN)/python bench/$$bench || missed="$$missed [$$bench]"; \
	done; \
	if [ -n "$$missed" ]; then echo "targets missed:$$missed"; exit 1; fi

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
