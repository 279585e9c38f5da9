# Everything a fresh machine needs: `make demo` (the main job), `make test` (the test suite), `make docs` (the site).
# torch is pinned first to the CPU wheel (an unpinned torch would pull a multi-GB CUDA build).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0

.PHONY: setup demo test test-fast lint docs clean

setup: $(VENV)/.installed

# The flat layout makes setuptools print an informational "Editable installation." note on every editable install
# (nothing wrong with ours); PYTHONWARNINGS filters that one message only: real build warnings still show.
$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	PYTHONWARNINGS="ignore:Editable installation" $(PY) -m pip install --quiet -e ".[test,docs]"
	touch $@

demo: setup
	$(PY) examples/compress_smollm2.py

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not real"

lint: setup
	$(PY) -m ruff check compressed_embeddings tests examples docs

# The documentation site (mkdocs.yml), warnings as errors, into site/. Its code blocks run in tests/test_docs.py.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

clean:
	rm -rf $(VENV) outputs build site *.egg-info .pytest_cache
