"""How the MNIST DAGs call the project's jobs: the same spark-submit command a crontab line would run.

Airflow never imports the pipeline (it lives in its own venv, with NumPy 2 and protobuf 7): every Spark task is one
`spark-submit <checkout>/jobs/<job>.py --conf <config> --profile <profile> --ds <batch date>` with the project venv's
spark-submit and the package shipped with --py-files. What the DAGs need to know about the deployment (its Spark
master, whether it is ready to run) they ask the project's own Python, `python -m pipeline.deployment`, once per
parse: so the config file and its profile decide local or cluster exactly as they do for `make run`.

The deployment, from the environment of the scheduler and its workers (`make airflow-up` writes it to
<AIRFLOW_HOME>/mnist.env; every setting is optional):
  MNIST_PROJECT       the checkout (default: the folder above dags/)
  MNIST_CONF          the pipeline config file (default: <checkout>/conf/local.yaml)
  MNIST_PROFILE       the config profile (default: the config file's own, else full)
  MNIST_SPARK_SUBMIT  spark-submit to run (default: <checkout>/.venv/bin/spark-submit; the Airflow venv's own
                      spark-submit belongs to pyspark-client and cannot run the jobs)
  MNIST_PYTHON        Python of the Spark driver and local workers (default: <checkout>/.venv/bin/python)
  MNIST_PACKAGE       the zipped package for --py-files (default: <checkout>/dist/pipeline.zip, `make dist`)
  MNIST_SPARK_POOL    the Airflow pool every Spark task takes a slot of (default mnist_spark; `make airflow-up`
                      creates it with MNIST_SPARK_SLOTS slots, 1 by default: one Spark job at a time on one machine)
  MNIST_RETRIES       retries of a task that failed in a way a retry can fix (default 2)
  MNIST_SPARK_CONN    an Airflow connection to use for the master instead of the config's spark.master
"""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Param, get_parsing_context, task
from airflow.sdk.exceptions import AirflowException, AirflowFailException

PROJECT = Path(os.environ.get("MNIST_PROJECT", Path(__file__).resolve().parent.parent))
CONF = Path(os.environ.get("MNIST_CONF", PROJECT / "conf" / "local.yaml"))
PROFILE = os.environ.get("MNIST_PROFILE", "")  # the config file's own when empty
SPARK_SUBMIT = os.environ.get("MNIST_SPARK_SUBMIT", str(PROJECT / ".venv" / "bin" / "spark-submit"))
PYTHON = os.environ.get("MNIST_PYTHON", str(PROJECT / ".venv" / "bin" / "python"))
PACKAGE = os.environ.get("MNIST_PACKAGE", str(PROJECT / "dist" / "pipeline.zip"))  # built by make dist
SPARK_POOL = os.environ.get("MNIST_SPARK_POOL", "mnist_spark")
PROJECT_ARGS = ["--conf", str(CONF), *(["--profile", PROFILE] if PROFILE else [])]

# pipeline/errors.py EXIT_NOT_RETRYABLE: the job's input or config is wrong, or a check gave its verdict (drift, a
# quality gate). tests/test_dags.py holds the two equal.
EXIT_NOT_RETRYABLE = 2

# The day a run processes, the same through every entry point (see batch_date).
BATCH_DATE = "{{ batch_date(dag_run, params) }}"


def batch_date(dag_run, params) -> str:
    """The batch date of a run: its `ds` param when given (a manual run names its day: `airflow dags trigger DAG -c
    '{"ds": "2026-12-01"}'`, or the UI's trigger form); else the last day of its data interval, the day that has
    ended (a scheduled or backfill run of CronDataIntervalTimetable at midnight of the 25th has the interval [24th,
    25th) and processes the 24th; a weekly run its week's last day); else, for a run triggered with no logical date
    (no interval), the day that ended before it was triggered. Airflow's own {{ ds }} is the logical date, which
    for a manual run is the trigger's own day: never use it for the batch date."""
    if params.get("ds"):
        return str(params["ds"])
    end = dag_run.data_interval_end
    if end is None:
        return (dag_run.run_after - dt.timedelta(days=1)).date().isoformat()
    if dag_run.run_type == "manual" and dag_run.logical_date is not None and end > dag_run.logical_date:
        # `airflow dags trigger --logical-date` (Airflow 3.3's CLI) infers the interval from the current time, not
        # from the date given: processing that interval would score a day nobody asked for.
        raise AirflowFailException(
            f"this run's data interval ends {end:%Y-%m-%d}, after its logical date {dag_run.logical_date:%Y-%m-%d} "
            "(airflow dags trigger --logical-date infers the interval from now): name the day instead, "
            f"airflow dags trigger {dag_run.dag_id} -c '{{\"ds\": \"YYYY-MM-DD\"}}'")
    return (end - dt.timedelta(days=1)).date().isoformat()


def ask_project(*args: str) -> dict:
    """The project's answer (pipeline/deployment.py) as JSON; its one-line error as this module's import error."""
    proc = subprocess.run([PYTHON, "-m", "pipeline.deployment", *PROJECT_ARGS, *args], capture_output=True,
                          text=True, timeout=300, cwd=PROJECT, env={**os.environ, "PYTHONPATH": PACKAGE})
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise RuntimeError(f"{PYTHON} -m pipeline.deployment {args[0]}: {reason.removeprefix('ERROR [deployment]: ')}")
    return json.loads(proc.stdout)


PLUGINS = PROJECT / "dags" / "plugins"
if not any(Path(entry).resolve() == PLUGINS.resolve() for entry in sys.path if entry):
    # The DAGs' timetable is a plugin: the scheduler can only read it back from there.
    raise RuntimeError(f"set AIRFLOW__CORE__PLUGINS_FOLDER={PLUGINS} (make airflow-up's mnist.env sets it): the DAGs' "
                       "timetable, mnist_timetable.BatchDayTimetable, is an Airflow plugin there")
if not Path(PACKAGE).is_file():
    raise RuntimeError(f"{PACKAGE} not found: run `make dist` in {PROJECT} (the jobs ship it with --py-files)")
# A task's own process parses this file again only to find its task: whether the deployment has a champion was
# judged by the DAG processor's parse, and asking the registry again costs every task 2-3 s (MLflow's import).
DEPLOYMENT = ask_project("readiness", *(["--without-registry"] if get_parsing_context().task_id else []))


def require_ready(dag: str) -> None:
    """Fail the DAG file's import, in one line per problem, while the deployment cannot run `dag`'s tasks: the UI
    shows it as an import error naming what to run."""
    problems = DEPLOYMENT["problems"][dag]
    if problems:
        raise RuntimeError(f"{CONF} (profile {DEPLOYMENT['profile']}) is not ready: " + "; ".join(problems))


def connection_id() -> str:
    """The Spark connection the operator reads its master from: MNIST_SPARK_CONN if set, else one made from the
    config's spark.master (an Airflow connection given as an environment variable, which a task's process, parsing
    this file again, also sees)."""
    if os.environ.get("MNIST_SPARK_CONN"):
        return os.environ["MNIST_SPARK_CONN"]
    os.environ["AIRFLOW_CONN_MNIST_SPARK_FROM_CONF"] = json.dumps(
        {"conn_type": "spark", "host": DEPLOYMENT["spark_master"]})
    return "mnist_spark_from_conf"


DAG_SETTINGS = {
    "default_args": {
        "owner": "mnist",
        # Every job is idempotent (a day's partitions are replaced in one move), so retrying is safe; a job that
        # exits EXIT_NOT_RETRYABLE is failed at once (SparkJob).
        "retries": int(os.environ.get("MNIST_RETRIES", "2")),
        "retry_delay": dt.timedelta(minutes=5),
    },
    "params": {"ds": Param(None, type=["null", "string"], format="date", title="Batch date",
                           description="The day to process, YYYY-MM-DD. Empty: the day that has ended (a scheduled "
                                       "run: the last day of its data interval).")},
    "user_defined_macros": {"batch_date": batch_date},
}


class SparkJob(SparkSubmitOperator):
    """A spark-submit of one project job. Its exit code says whether a retry can help (pipeline/errors.py): a job
    that exits EXIT_NOT_RETRYABLE fails the task at once with the job's one-line reason."""

    def execute(self, context):
        try:
            return super().execute(context)
        except AirflowException as exc:
            submitted = getattr(self._hook, "_submit_sp", None)
            if submitted is None or submitted.returncode != EXIT_NOT_RETRYABLE:
                raise  # a lost executor, a locked output, a dead worker: the retries are for these
            reasons = [line for line in str(exc).splitlines() if line.startswith("ERROR [")]
            raise AirflowFailException(reasons[-1] if reasons else str(exc).splitlines()[0]) from None


def spark_job(task_id: str, job: str, *args: str, **operator_kwargs) -> SparkJob:
    """A task running jobs/<job> for the run's batch date, in the Spark pool."""
    local = DEPLOYMENT["spark_master"].startswith("local")
    return SparkJob(
        task_id=task_id,
        conn_id=connection_id(),
        spark_binary=SPARK_SUBMIT,
        application=str(PROJECT / "jobs" / job),
        application_args=[*PROJECT_ARGS, "--ds", BATCH_DATE, *args],
        py_files=PACKAGE,
        conf=DEPLOYMENT["driver_settings"],  # the driver's classes mapped from the project's archive, when recorded
        name=f"mnist-{task_id}",
        pool=SPARK_POOL,
        # Local mode: the driver's JVM binds to loopback only, and the workers run the project's Python.
        env_vars={"PYSPARK_PYTHON": PYTHON, **({"SPARK_LOCAL_IP": "127.0.0.1"} if local else {})},
        **operator_kwargs,
    )


def workflow_tasks(workflow: str, **settings: dict) -> dict[str, SparkJob]:
    """One Spark task per stage of the project's `workflow` (pipeline/stages.py WORKFLOWS, as
    `pipeline.deployment readiness` declares them), named after the stage and run after the stages whose outputs it
    reads; `settings[stage]`: that task's own operator settings (a trigger rule)."""
    tasks: dict[str, SparkJob] = {}
    for stage in DEPLOYMENT["workflows"][workflow]:
        tasks[stage["stage"]] = spark_job(stage["stage"], stage["job"], **settings.get(stage["stage"], {}))
        for upstream in stage["after"]:
            tasks[upstream] >> tasks[stage["stage"]]
    return tasks


def decision_branch(task_id: str, promoted: str, kept: str):
    """A branch on the retraining's decision.json, read by the project's own Python (it knows the layout), its
    evidence logged condition by condition, so the grid shows which way the run went and why."""
    @task.branch(task_id=task_id, retries=0)  # reading a file again gives the same answer
    def decide(batch_day: str) -> str:
        try:
            decision = ask_project("decision", "--ds", batch_day)
        except RuntimeError as exc:  # no decision.json: the retraining did not decide, and rereading will not help
            raise AirflowFailException(str(exc)) from None
        print("\n".join(decision["lines"]))
        return promoted if decision["promoted"] else kept
    return decide(BATCH_DATE)
