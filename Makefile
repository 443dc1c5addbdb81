# Two commands that work on a fresh machine: `make demo` and `make test`.
# torch is installed BEFORE the package so that the `torch>=2.4` requirement is
# already met by the CPU build and pip does not pull a multi-GB CUDA build.
# Override TORCH_SPEC for another platform, e.g. `make test TORCH_SPEC=torch`.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.decodelab-installed

.PHONY: demo test test-all setup clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/decodelab demo

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not gpu"

test-all: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
