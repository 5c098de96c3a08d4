# The two commands of the README: `make demo` and `make test`.
# Both create .venv with python3 if it is missing and install gpnat into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.gpnat-installed
# quieten TensorFlow's start-up logging
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): setup.py | $(PY)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m gpnat.demo --out demo-output

test: $(STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) demo-output .pytest_cache
