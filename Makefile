# Two commands matter: `make run` (the whole pipeline) and `make test`. Both set up .venv on first use.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.setup-done
SPARK_CLASSES := $(VENV)/.spark-classes-done
READY := $(STAMP) $(SPARK_CLASSES)
CONSTRAINTS := constraints.txt
PROFILE ?= full
CONF ?= conf/local.yaml
BENCH ?= full
# The scheduler's own environment (Airflow 3.3 needs NumPy 2 and protobuf 7; see constraints-airflow.txt).
AIRFLOW_VENV := .venv-airflow
AIRFLOW_STAMP := $(AIRFLOW_VENV)/.setup-done
AIRFLOW_CONSTRAINTS := constraints-airflow.txt
AIRFLOW_PACKAGES := apache-airflow apache-airflow-providers-apache-spark
# This machine's pip config names local package mirrors that may not exist; their warnings are noise.
QUIET_PIP := 2>&1 | { grep -v "^WARNING: Location 'file:///opt" || true; }
HOROVOD_FLAGS := HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
                 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1

.PHONY: setup spark-classes airflow-setup airflow-constraints schedule-demo run test test-fast config-reference lint bench bench-model4 dist pack clean check-prereqs cluster-up cluster-down cluster-status \
        cluster-check cluster-run test-cluster constraints mlflow-ui tensorboard airflow-up airflow-down airflow-status serve

setup: $(READY)

# Fail in one line, before any pip output, when the machine lacks what the build needs.
check-prereqs:
	@command -v $(PYTHON) >/dev/null || { echo "ERROR: $(PYTHON) not found: install Python 3.11 (with venv and headers)"; exit 1; }
	@bash .ci/check-java || exit 1
	@command -v g++ >/dev/null || command -v c++ >/dev/null || { echo "ERROR: no C++ compiler: install g++ (Debian: apt-get install g++), needed to build horovod"; exit 1; }

$(STAMP): setup.py $(CONSTRAINTS) | check-prereqs
	@echo ">> Setting up $(VENV) (first time: about 10 minutes here, mostly the horovod build)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c $(CONSTRAINTS) pip setuptools wheel $(QUIET_PIP)
	@echo ">> TensorFlow first: horovod compiles against it"
	$(PIP) install -q -c $(CONSTRAINTS) tensorflow-cpu numpy "cmake<4" $(QUIET_PIP)
	@echo ">> Building horovod with TensorFlow and Gloo (about 4 minutes on 2 cores; pip caches the wheel)"
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(HOROVOD_FLAGS) $(PIP) install -q --no-build-isolation \
	  -c $(CONSTRAINTS) "horovod[spark]" $(QUIET_PIP)
	$(PIP) install -q -c $(CONSTRAINTS) -e ".[dev]" $(QUIET_PIP)
	@touch $(STAMP)
	@$(PY) -m pipeline.versions

# The Spark driver's classes recorded once, mapped by every later driver JVM (pipeline/driver_jvm.py): 2-3 s off
# each job. Recorded again when the pins change; `make spark-classes` records them again now (after a JDK upgrade,
# which leaves the old archive unusable: drivers then load their classes as before).
RECORD_SPARK_CLASSES = $(PY) scripts/spark_class_archive.py && touch $(SPARK_CLASSES)

spark-classes: | $(STAMP)
	$(RECORD_SPARK_CLASSES)

$(SPARK_CLASSES): $(CONSTRAINTS) scripts/spark_class_archive.py | $(STAMP)
	@echo ">> Recording the Spark driver's classes (about 30 s)"
	$(RECORD_SPARK_CLASSES)

# Pin the whole resolved set: rewrite constraints.txt from what .venv holds now (its header comment is kept),
# every distribution at its installed version, pip/setuptools/wheel/cmake included, the editable project left out.
constraints: $(STAMP)
	@{ sed '/^[^#]/,$$d' $(CONSTRAINTS); $(PIP) freeze --all --exclude-editable | grep -iv '^mnist-spark-pipeline=='; } \
	  > $(CONSTRAINTS).tmp
	@mv $(CONSTRAINTS).tmp $(CONSTRAINTS)
	@touch $(STAMP)  # the venv is exactly what the file now says: no reinstall on the next make
	@echo "wrote $(CONSTRAINTS): $$(grep -c '==' $(CONSTRAINTS)) pinned distributions"

# Airflow and its Spark provider, in their own venv from their own pins (about 45 s from the package index).
airflow-setup: $(AIRFLOW_STAMP)

$(AIRFLOW_STAMP): $(AIRFLOW_CONSTRAINTS) | check-prereqs
	@echo ">> Setting up $(AIRFLOW_VENV): Airflow, for the scheduled batches"
	@test -x $(AIRFLOW_VENV)/bin/python || $(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/python -m pip install -q -c $(AIRFLOW_CONSTRAINTS) pip setuptools $(QUIET_PIP)
	$(AIRFLOW_VENV)/bin/python -m pip install -q -c $(AIRFLOW_CONSTRAINTS) $(AIRFLOW_PACKAGES) $(QUIET_PIP)
	@touch $(AIRFLOW_STAMP)

# Rewrite constraints-airflow.txt from what .venv-airflow holds (header kept), as `constraints` does for .venv.
airflow-constraints: $(AIRFLOW_STAMP)
	@{ sed '/^[^#]/,$$d' $(AIRFLOW_CONSTRAINTS); $(AIRFLOW_VENV)/bin/python -m pip freeze --all; } \
	  > $(AIRFLOW_CONSTRAINTS).tmp
	@mv $(AIRFLOW_CONSTRAINTS).tmp $(AIRFLOW_CONSTRAINTS)
	@touch $(AIRFLOW_STAMP)
	@echo "wrote $(AIRFLOW_CONSTRAINTS): $$(grep -c '==' $(AIRFLOW_CONSTRAINTS)) pinned distributions"

run: $(READY)
	$(PY) jobs/run_pipeline.py --conf $(CONF) --profile $(PROFILE) $(ARGS)

# Three days of arrivals through the daily DAG, then the retraining DAG (airflow dags test: no scheduler).
schedule-demo: $(READY) $(AIRFLOW_STAMP) dist
	$(PY) scripts/schedule_demo.py $(ARGS)

# A real Airflow for this checkout (api-server, scheduler, dag-processor, triggerer) on 127.0.0.1:8280, state in
# output/airflow; the DAGs run CONF and PROFILE: make run PROFILE=quick && make airflow-up PROFILE=quick
airflow-up: $(READY) $(AIRFLOW_STAMP) dist
	@MNIST_CONF=$(CONF) MNIST_PROFILE=$(PROFILE) AIRFLOW_VENV=$(AIRFLOW_VENV) $(PY) scripts/airflow_service.py up

airflow-down:
	@$(PY) scripts/airflow_service.py down

airflow-status:
	@$(PY) scripts/airflow_service.py status

# The whole suite (what CI runs). Its ten slowest tests are printed at the end (pyproject.toml).
test: $(READY) $(AIRFLOW_STAMP)
	$(PY) -m pytest tests $(ARGS)

# The inner loop: no end-to-end run or Horovod training, no cluster, no Airflow, no venv pack (markers in
# pyproject.toml); a few minutes.
test-fast: $(READY)
	$(PY) -m pytest tests -m "not slow and not cluster and not airflow and not pack" $(ARGS)

# docs/configuration-reference.md from the typed config (tests/test_config.py fails when it is stale).
config-reference: $(STAMP)
	$(PY) -m pipeline.config_reference > docs/configuration-reference.md

lint: $(STAMP)
	$(VENV)/bin/ruff check pipeline jobs tests benchmarks scripts dags

# The MLflow UI over the local tracking store (paths.mlflow of CONF), on 127.0.0.1 only: http://127.0.0.1:$(PORT)
PORT ?= 5000
mlflow-ui: $(STAMP)
	$(PY) -m pipeline.tracking.ui --conf $(CONF) --port $(PORT)

# The registry's champion (or MODEL=models:/<name>/<version>) behind MLflow's scoring server on 127.0.0.1 only:
# POST images to http://127.0.0.1:$(SERVE_PORT)/invocations (docs/serving.md). Ctrl-C stops it and its workers.
SERVE_PORT ?= 5001
serve: $(READY)
	$(PY) scripts/serve.py --conf $(CONF) --profile $(PROFILE) --port $(SERVE_PORT) $(if $(MODEL),--model $(MODEL))

# TensorBoard over every run's training logs (<runs>/<run id>/train/<model>/tensorboard), on 127.0.0.1 only.
TB_PORT ?= 6006
TB_LOGDIR ?= output/runs
tensorboard: $(STAMP)
	$(VENV)/bin/tensorboard --logdir $(TB_LOGDIR) --host 127.0.0.1 --port $(TB_PORT)

bench: $(READY)
	$(PY) benchmarks/run.py --mode $(BENCH)

# model_4 through the pipeline with 3 seeds (fails below a mean of 99.5% test accuracy) and the ablation
# (augmentation on, schedule off): about 40 minutes on 2 cores. MODEL4_ARGS="--only seeds" skips the ablation.
MODEL4_ARGS ?= --ablation
bench-model4: $(READY)
	$(PY) benchmarks/model4.py $(MODEL4_ARGS)

# The artefacts shipped to a real cluster: the package for --py-files, and the config folder for a driver that
# runs on the cluster (deploy mode cluster: --archives dist/conf.zip#conf, then --conf conf/cluster.yaml). Profiles
# are read beside the --conf file, relative paths resolve against paths.root (docs/configuration.md), so the job
# runs from any directory. Only zip is needed, not the venv.
dist:
	@mkdir -p dist && rm -f dist/pipeline.zip dist/conf.zip
	zip -qr dist/pipeline.zip pipeline -x '*__pycache__*' '*.pyc'
	cd conf && zip -qr ../dist/conf.zip . -i '*.yaml'
	@echo "built dist/pipeline.zip and dist/conf.zip"

# The training environment for YARN or Kubernetes executors, packed by venv-pack into one archive (scripts/pack_env.py
# says what it leaves out: the editable install of this checkout, which ships as dist/pipeline.zip, and build-only
# files). Nodes need Python 3.11 where it is here, or at PACK_PYTHON_PREFIX (its prefix, e.g. /usr).
PACK := dist/pipeline-env.tar.gz
pack: $(STAMP) dist
	$(PY) scripts/pack_env.py --venv $(abspath $(VENV)) --output $(PACK) $(if $(PACK_PYTHON_PREFIX),--python-prefix $(PACK_PYTHON_PREFIX))

# A Spark standalone cluster on this machine: a master and two 1-core workers on 127.0.0.1, state in cluster/.
# Ports: CLUSTER_MASTER_PORT (7077), CLUSTER_MASTER_UI_PORT (8080), CLUSTER_WORKER_UI_PORT (8081, 8082).
CLUSTER_MASTER := spark://127.0.0.1:$(or $(CLUSTER_MASTER_PORT),7077)
# The driver's Python is also the executors' (spark.pyspark.python): here the venv stands for a packed env.
SPARK_SUBMIT := SPARK_LOCAL_IP=127.0.0.1 PYSPARK_PYTHON=$(CURDIR)/$(PY) $(VENV)/bin/spark-submit \
                --master $(CLUSTER_MASTER) --py-files dist/pipeline.zip \
                --conf spark.driver.defaultJavaOptions="$$($(PY) -m pipeline.driver_jvm)"

cluster-up: $(READY)
	@$(PY) scripts/cluster.py up

cluster-down:
	@$(PY) scripts/cluster.py down

cluster-status:
	@$(PY) scripts/cluster.py status

# Executors reachable, the package shipped, a 2-rank Horovod allreduce with one rank on each worker.
cluster-check: dist
	$(SPARK_SUBMIT) scripts/cluster_check.py --ranks 2

# The whole pipeline on the loopback cluster: make cluster-up && make cluster-run PROFILE=quick && make cluster-down
cluster-run: dist
	$(SPARK_SUBMIT) --driver-memory 2g jobs/run_pipeline.py --conf conf/cluster-local.yaml --profile $(PROFILE) $(ARGS)

test-cluster: $(READY)
	$(PY) -m pytest tests/test_cluster.py $(ARGS)

clean:
	rm -rf runs output dist spark-warehouse metastore_db .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(AIRFLOW_VENV)
