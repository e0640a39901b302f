# Two commands matter: `make run` (the whole pipeline) and `make test`. Both set up .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.setup-done
CONSTRAINTS := constraints.txt
PROFILE ?= full
CONF ?= conf/local.yaml
BENCH ?= full
HOROVOD_FLAGS := HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
                 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1

.PHONY: setup run test test-fast lint bench dist clean check-prereqs

setup: $(STAMP)

# Fail in one line, before any pip output, when the machine lacks what the build needs.
check-prereqs:
	@command -v $(PYTHON) >/dev/null || { echo "ERROR: $(PYTHON) not found: install Python 3.11 (with venv and headers)"; exit 1; }
	@bash .ci/check-java || exit 1
	@command -v g++ >/dev/null || command -v c++ >/dev/null || { echo "ERROR: no C++ compiler: install g++ (Debian: apt-get install g++), needed to build horovod"; exit 1; }

$(STAMP): setup.py $(CONSTRAINTS) | check-prereqs
	@echo ">> Setting up $(VENV) (first time: about 10 minutes here, mostly the horovod build)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c $(CONSTRAINTS) pip setuptools wheel
	$(PIP) install -q -c $(CONSTRAINTS) tensorflow-cpu numpy "cmake<4"
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(HOROVOD_FLAGS) $(PIP) install -q --no-build-isolation -c $(CONSTRAINTS) "horovod[spark]"
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[dev]"
	@touch $(STAMP)
	@$(PY) -m pipeline.versions

run: $(STAMP)
	$(PY) jobs/run_pipeline.py --conf $(CONF) --profile $(PROFILE) $(ARGS)

test: $(STAMP)
	$(PY) -m pytest tests $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check pipeline jobs tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/run.py --mode $(BENCH)

# The artefact shipped to executors with --py-files on a real cluster.
dist: $(STAMP)
	@mkdir -p dist && rm -f dist/pipeline.zip
	zip -qr dist/pipeline.zip pipeline -x '*__pycache__*'
	@echo "built dist/pipeline.zip"

clean:
	rm -rf runs output dist spark-warehouse metastore_db .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
