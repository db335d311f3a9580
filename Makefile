# Quick start:  make demo   (creates .venv, installs lbdt without the developer extras, runs the demo)
#               make test   (same set-up, then the fast test suite)
PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints/cpu.txt
BIN := $(VENV)/bin

.PHONY: setup setup-demo demo test test-all lint clean

# setup: lbdt and the developer extras (tests, lint, web page, ONNX); setup-demo: lbdt alone, what the demo needs
setup: $(VENV)/.installed
setup-demo: $(VENV)/.installed-demo

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	touch $@ $(VENV)/.installed-demo

$(VENV)/.installed-demo: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e .
	touch $@

demo: setup-demo
	$(BIN)/lbdt demo

test: setup
	$(BIN)/python -m pytest -q -m "not slow and not gpu"

test-all: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) out build src/*.egg-info
