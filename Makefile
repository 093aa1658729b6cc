# make test / make demo / make dev / make bench / make screenshots: each creates .venv and installs on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export PIPELINE_DATA_LAKE ?= $(CURDIR)/data_lake
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: install test demo dev bench lint dagster-home screenshots

install: $(STAMP)

# torch first: on a machine without a GPU the pinned CPU build; with one, the default (CUDA) build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q torch; \
	else $(PY) -m pip install -q torch==2.13.0; fi
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# The instance config (DuckDB writers' concurrency pool of 1) is copied into DAGSTER_HOME on first use.
dagster-home:
	mkdir -p $(DAGSTER_HOME)
	test -f $(DAGSTER_HOME)/dagster.yaml || cp dagster_home/dagster.yaml $(DAGSTER_HOME)/dagster.yaml

demo: $(STAMP) dagster-home
	$(PY) scripts/demo.py

dev: $(STAMP) dagster-home
	$(VENV)/bin/dagster dev -w workspace.yaml

# PNGs of the UI on the demo's instance and lake (after `make demo`), for the README; needs Debian's chromium.
screenshots: $(STAMP) dagster-home
	$(PY) scripts/ui_screenshots.py --out docs/ui

bench: $(STAMP)
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/features.py
	$(PY) benchmarks/env_throughput.py
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/options_controls.py
	$(PY) benchmarks/backfill_memory.py
	$(PY) benchmarks/ddp_parity.py
	$(PY) benchmarks/gate_calibration.py --workers 2
