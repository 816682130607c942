# Two entry points for a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test build bench clean

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q 'cython>=3.0' 'setuptools>=68' wheel
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

# Rebuilds the extension in place when the Cython sources changed (fast when they did not).
build: $(STAMP)
	$(BIN)/python setup.py -q build_ext --inplace

demo: build
	$(BIN)/sigmatch demo

test: build
	$(BIN)/python -m pytest -q

bench: build
	$(BIN)/python -m pytest -q bench --benchmark-only

clean:
	rm -rf build engine/_core.c engine/*.so engine/*.html *.egg-info
