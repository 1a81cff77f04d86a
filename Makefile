# Two commands on a fresh machine: `make demo` and `make test`. Each sets up what it needs
# (the virtual environment, the requirements, the data) once; a second run reuses it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test test-slow bench data setup clean-venv

setup: $(STAMP)

$(STAMP): requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -e .
	touch $@

# `mtl-tf data fetch` downloads and renders only what is missing.
data: $(STAMP)
	$(VENV)/bin/mtl-tf data fetch

demo: data
	$(VENV)/bin/mtl-tf data demo --out runs/data-demo
	$(VENV)/bin/mtl-tf demo --out runs/demo --saved-models saved_models

# Two pytest workers: many tests wait on processes they start, so one core is idle otherwise.
test: data
	$(PY) -m pytest -q -n 2

test-slow: data
	$(PY) -m pytest -q -n 2 -m slow

clean-venv:
	rm -rf $(VENV)

# Speed figures (not tests): per-task gradient costs, Trainer vs Keras fit() throughput.
# `make bench` writes the speed record (benchmarks/results.json, .md); `make bench QUICK=1`
# shrinks every measurement to seconds (not the record). Then the detailed tables.
BENCH_VENV := .venv-bench

$(BENCH_VENV)/.installed: requirements-bench.txt
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --disable-pip-version-check -q -r requirements-bench.txt
	touch $@

bench: data $(BENCH_VENV)/.installed
	$(PY) -m benchmarks.record $(if $(QUICK),--quick --out runs/bench-quick)
	$(if $(QUICK),,$(PY) -m benchmarks.gradient_taps)
	$(if $(QUICK),,$(PY) -m benchmarks.throughput)
	$(if $(QUICK),,$(PY) -m benchmarks.allconv_speed)
	$(if $(QUICK),,$(PY) -m benchmarks.selective_sharing)
	$(if $(QUICK),,$(PY) -m benchmarks.weighting_speed)
	$(if $(QUICK),,$(PY) -m benchmarks.architectures_speed)
