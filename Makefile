# Newcomer entry points: `make demo` runs the demo, `make test` runs the test suite.
# Both create a virtual environment in .venv and install the package into it first.
# TORCH_SPEC picks the PyTorch build: the default pins the CPU wheel CI uses; on a GPU machine
# with PyTorch already installed, use `make test VENV_FLAGS=--system-site-packages TORCH_SPEC=`.

VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
VENV_FLAGS ?=
PY := $(VENV)/bin/python

.PHONY: install test lint demo clean

$(VENV)/.installed: setup.py pyproject.toml
	python3 -m venv $(VENV_FLAGS) $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(TORCH_SPEC),$(PY) -m pip install -q "$(TORCH_SPEC)")
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

lint: install
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest -q

demo: install
	$(VENV)/bin/vggt-ros demo

clean:
	rm -rf $(VENV) build *.egg-info
