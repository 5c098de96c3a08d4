# The two commands of the README: `make demo` and `make test` (ruff's lint, configured in ruff.toml,
# then the tests, which also build the docs in tests/test_docs.py, spread over up to 4 processes by
# pytest-xdist, one test file per process at a time, so a module's fixtures are computed once, the
# slowest files first (tests/conftest.py orders them);
# `.venv/bin/python -m pytest tests` runs them in one); `make docs` builds the documentation.
# Both create .venv with python3 if it is missing and install gpnat into it with the test extras
# (which include scikit-learn, the `experiments` extra, for the data of the demo and the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.gpnat-installed
DOCS_STAMP := $(VENV)/.gpnat-docs-installed
# quieten TensorFlow's start-up logging
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test docs install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): setup.py | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m gpnat.demo --out demo-output

test: $(STAMP) $(DOCS_STAMP)
	$(VENV)/bin/ruff check gpnat tests benchmarks examples
	$(PY) -m pytest -q -n auto --maxprocesses=4 --dist loadfile --no-loadscope-reorder --durations=25 tests

$(DOCS_STAMP): setup.py | $(PY)
	$(PY) -m pip install --quiet -e '.[docs]'
	touch $(DOCS_STAMP)

# warnings are errors; notebooks are linked, never executed
docs: $(DOCS_STAMP)
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) demo-output .pytest_cache docs/_build
