# costopt: `make demo` runs the demo, `make test` runs the test suite.
# Both set up .venv on first use (CPU torch, so no CUDA build is pulled).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
EXTRAS ?= test,notebooks,local
# The local extra's llama-cpp-python builds from source (minutes, once; pip caches
# the wheel). Portable CPU flags: a -march=native build dies with "Illegal
# instruction" on some virtual machines.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: setup
	$(VENV)/bin/costopt demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: setup lint
	$(PY) -m pytest

bench: setup
	$(PY) benchmarks/callback_overhead.py --out benchmarks/results/callback_overhead.json
	$(PY) benchmarks/cache_quality.py --out benchmarks/results/cache_quality.json
	$(PY) benchmarks/cache_false_hits.py --out benchmarks/results/cache_false_hits.json
	$(PY) benchmarks/cache_latency.py --out benchmarks/results/cache_latency.json
	$(PY) benchmarks/routing.py --out benchmarks/results/routing.json
	$(PY) benchmarks/context.py --out benchmarks/results/context.json
	$(PY) benchmarks/memory.py --out benchmarks/results/memory.json
	$(PY) benchmarks/batch.py --out benchmarks/results/batch.json
	$(PY) benchmarks/scaleout.py --out benchmarks/results/scaleout.json
	$(PY) benchmarks/load.py --out benchmarks/results/load.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
