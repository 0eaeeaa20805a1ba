# Two commands: `make demo` and `make test`. Each sets up .venv first.
PYTHON ?= python3.11
TORCH ?= torch==2.13.0
VENV ?= .venv
TEST_WORKERS ?= 2  # pytest-xdist processes for `make test` (0: one process)
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test fuzz bench install clean docs docs-serve docs-check

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; run 'make PYTHON=python3 ...'"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m tanet demo

test: $(STAMP)
	@bash scripts/browser-deps.sh
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

fuzz: $(STAMP)
	TANET_FUZZ_EXAMPLES=2000 $(PY) -m pytest -q tests -k fuzz

# The documentation site (mkdocs.yml; pages in docs/, generated ones by docs/gen/hooks.py).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve --dev-addr 127.0.0.1:8000

# Build the site and look at it in headless Chromium: screenshots into build/test-artifacts/.
docs-check: $(STAMP)
	@bash scripts/browser-deps.sh
	$(PY) -m pytest -q tests/test_docs.py -k "browser or strict"

bench: $(STAMP)
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) runs build site *.egg-info
