# Two entry points for a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
RAY    := $(VENV)/.ray

.PHONY: demo test build bench fuzz mutants clean

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q 'cython>=3.0' 'setuptools>=68' wheel
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

# Rebuilds the extension in place when the Cython sources changed (fast when they did not).
build: $(STAMP)
	$(BIN)/python setup.py -q build_ext --inplace

# The world is kept in demo/: a second `make demo` reuses it while it is as it was made
demo: build
	$(BIN)/sigmatch demo --dir demo

# The [ray] extra (pyproject.toml) for tests/test_workers_ray.py: only the tests need it, so
# `make demo` does not install it
$(RAY): $(STAMP)
	$(BIN)/python -m pip install -q 'ray>=2.9'
	touch $(RAY)

test: build $(RAY)
	$(BIN)/python -m pytest -q

bench: build
	$(BIN)/python -m pytest -q bench --benchmark-only

# The long fuzz run (tests/fuzz/README.md): each target for FUZZ_SECONDS, the corpora kept
# in tests/fuzz/corpus/ from one run to the next, findings in tests/fuzz/findings/.
FUZZ_SECONDS ?= 3600
FUZZ_FLAGS   := -timeout=60 -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix=tests/fuzz/findings/
fuzz: build
	mkdir -p tests/fuzz/corpus/decoder tests/fuzz/corpus/config tests/fuzz/findings
	$(BIN)/python tests/fuzz/fuzz_decoder.py -max_total_time=$(FUZZ_SECONDS) $(FUZZ_FLAGS) tests/fuzz/corpus/decoder
	$(BIN)/python tests/fuzz/fuzz_config.py -max_total_time=$(FUZZ_SECONDS) $(FUZZ_FLAGS) tests/fuzz/corpus/config

# The mutation check (tests/mutation/run_mutants.py, docs/testing.md): each mutant of the core,
# the model and the CLI applied to a scratch copy, rebuilt, and the suite run until it fails.
# MUTANTS=name,name runs a subset; the whole list takes about an hour on 2 cores (docs/testing.md).
MUTANTS ?=
mutants: build
	$(BIN)/python tests/mutation/run_mutants.py $(if $(MUTANTS),--only $(MUTANTS))

clean:
	rm -rf build engine/_core.c engine/*.so engine/*.html *.egg-info
