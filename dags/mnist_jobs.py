"""How the MNIST DAGs call the project's jobs: the same spark-submit command a crontab line would run.

Airflow never imports the pipeline (it lives in its own venv, with NumPy 2 and protobuf 7): every task is one
`spark-submit <checkout>/jobs/<job>.py --conf <config> --ds <batch date>` with the project venv's spark-submit,
the package shipped with --py-files, and the Spark master taken from the pipeline's config file, so the config
decides local or cluster exactly as it does for `make run`.

Settings, from the environment of the scheduler and its workers (all optional):
  MNIST_PROJECT       the checkout (default: the folder above dags/)
  MNIST_CONF          the pipeline config file (default: <checkout>/conf/local.yaml)
  MNIST_SPARK_SUBMIT  spark-submit to run (default: <checkout>/.venv/bin/spark-submit; the Airflow venv's own
                      spark-submit belongs to pyspark-client and cannot run the jobs)
  MNIST_PYTHON        Python of the Spark driver and local workers (default: <checkout>/.venv/bin/python)
  MNIST_PACKAGE       the zipped package for --py-files (default: <checkout>/dist/pipeline.zip, `make dist`)
  MNIST_PROFILE       the config profile the jobs use (default: theirs, full)
  MNIST_RETRIES       retries of a failed task (default 2; the drift check is never retried: its verdict stays)
  MNIST_SPARK_CONN    an Airflow connection to use for the master instead of the config file's spark.master
"""
from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import yaml
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.providers.standard.operators.python import BranchExternalPythonOperator

PROJECT = Path(os.environ.get("MNIST_PROJECT", Path(__file__).resolve().parent.parent))
CONF = Path(os.environ.get("MNIST_CONF", PROJECT / "conf" / "local.yaml"))
SPARK_SUBMIT = os.environ.get("MNIST_SPARK_SUBMIT", str(PROJECT / ".venv" / "bin" / "spark-submit"))
PYTHON = os.environ.get("MNIST_PYTHON", str(PROJECT / ".venv" / "bin" / "python"))
PACKAGE = os.environ.get("MNIST_PACKAGE", str(PROJECT / "dist" / "pipeline.zip"))  # built by make dist
PROFILE = os.environ.get("MNIST_PROFILE", "")  # the jobs' own default when empty

# The day a run processes: the last whole day of its data interval. With CronDataIntervalTimetable the daily run
# that starts at midnight of the 25th has the interval [24th, 25th) and processes the 24th, the day that has ended;
# a weekly run processes the week up to its last day. A manual run (`airflow dags test DAG 2026-11-25`) infers the
# interval that ended at its date, so it processes the 24th too. Airflow's own {{ ds }} is the logical date, which
# for a manual run is the 25th itself: never use it for the batch date.
BATCH_DATE = "{{ macros.ds_add(data_interval_end | ds, -1) }}"

DEFAULT_ARGS = {
    "owner": "mnist",
    # Every job is idempotent (a day's partitions are replaced in one move), so retrying is safe.
    "retries": int(os.environ.get("MNIST_RETRIES", "2")),
    "retry_delay": timedelta(minutes=5),
}


def spark_master(conf_file: Path) -> str:
    """The config file's spark.master: the one place the deployment names its cluster."""
    with open(conf_file) as f:
        master = ((yaml.safe_load(f) or {}).get("spark") or {}).get("master") or "local[*]"
    return master


def connection_id() -> str:
    """The Spark connection the operator reads its master from: MNIST_SPARK_CONN if set, else one made from the
    config file (an Airflow connection given as an environment variable, which a task's process also sees)."""
    if os.environ.get("MNIST_SPARK_CONN"):
        return os.environ["MNIST_SPARK_CONN"]
    os.environ.setdefault("AIRFLOW_CONN_MNIST_SPARK_FROM_CONF",
                          json.dumps({"conn_type": "spark", "host": spark_master(CONF)}))
    return "mnist_spark_from_conf"


def spark_job(task_id: str, job: str, *args: str, **operator_kwargs) -> SparkSubmitOperator:
    """A task running jobs/<job> for the run's batch date."""
    local = spark_master(CONF).startswith("local")
    return SparkSubmitOperator(
        task_id=task_id,
        conn_id=connection_id(),
        spark_binary=SPARK_SUBMIT,
        application=str(PROJECT / "jobs" / job),
        application_args=["--conf", str(CONF), *(["--profile", PROFILE] if PROFILE else []), "--ds", BATCH_DATE,
                          *args],
        py_files=PACKAGE,
        name=f"mnist-{task_id}",
        # Local mode: the driver's JVM binds to loopback only, and the workers run the project's Python.
        env_vars={"PYSPARK_PYTHON": PYTHON, **({"SPARK_LOCAL_IP": "127.0.0.1"} if local else {})},
        **operator_kwargs,
    )


def read_decision(conf: str, profile: str, ds: str, promoted: str, kept: str) -> str:
    """Runs in the project's Python: the retraining decision of day `ds`, logged, and the branch it selects."""
    from pipeline import storage
    from pipeline.config import load_config
    from pipeline.layout import Layout

    decision = storage.read_json(Layout.from_config(load_config(conf, profile or None)).batch_files(ds)
                                 .retrain_decision)
    print(f"retraining {ds}: {'promoted' if decision['promoted'] else 'kept the champion'}: {decision['reason']}")
    for condition in decision.get("conditions") or []:  # the evidence, condition by condition, in the task log
        verdict = {True: "passed", False: "FAILED", None: "does not apply"}[condition["passed"]]
        print(f"  {condition['name']} ({verdict}): {condition['detail']}")
    return promoted if decision["promoted"] else kept


def decision_branch(task_id: str, promoted: str, kept: str) -> BranchExternalPythonOperator:
    """A branch on the retraining's decision.json, read by the project's own Python (it knows the layout), so
    the grid shows which way the run went."""
    return BranchExternalPythonOperator(
        task_id=task_id,
        python=PYTHON,
        python_callable=read_decision,
        op_kwargs={"conf": str(CONF), "profile": PROFILE, "ds": BATCH_DATE, "promoted": promoted, "kept": kept},
        expect_airflow=False,
    )
