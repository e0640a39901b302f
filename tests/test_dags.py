"""The Airflow DAGs in dags/: they import (only for a deployment that is ready to run them), have the expected
tasks, timetables and pool, take the same batch date through every entry point, and call the project's jobs with
the project's spark-submit. Airflow lives in its own venv (.venv-airflow, built by `make test`), so these tests
drive it through subprocesses, as a scheduler would; tests/test_airflow_scheduler.py runs them under a real one."""
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from registry_versions import make_champion
from scheduled import DAILY, RETRAINING, SPARK_POOL, write_config

from pipeline import storage
from pipeline.config import REPO_ROOT, load_config
from pipeline.errors import EXIT_NOT_RETRYABLE
from pipeline.layout import Layout

AIRFLOW_BIN = REPO_ROOT / ".venv-airflow" / "bin"
DAGS = REPO_ROOT / "dags"

pytestmark = pytest.mark.airflow


def airflow_env(home, conf, package, plugins: Path | None = DAGS / "plugins") -> dict:
    """An Airflow of its own for one test: SQLite metadata under `home`, our dags/ folder, no examples, the
    deployment's config `conf`."""
    return {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins or home / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "MNIST_CONF": str(conf), "MNIST_PACKAGE": str(package)}


def probe(home, conf, package, plugins: Path | None = DAGS / "plugins") -> dict:
    """What tests/airflow_probe.py reports about dags/, for a scheduled run at midnight of 2026-11-25 and manual
    runs dated 2026-11-25."""
    out = home / "facts.json"
    proc = subprocess.run([str(AIRFLOW_BIN / "python"), str(REPO_ROOT / "tests" / "airflow_probe.py"), str(DAGS),
                           str(out), "2026-11-25T00:00:00+00:00", "2026-11-25T00:00:00+00:00"],
                          env=airflow_env(home, conf, package, plugins), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def ready_conf(tmp_path_factory, small_mnist_model, tiny_world):
    """A deployment the DAGs accept: a champion in its registry, and curated data (the readiness check looks for
    the curated manifest: a stand-in here, the structure tests read nothing else)."""
    root = tmp_path_factory.mktemp("ready")
    conf = write_config(root, tiny_world)
    cfg = load_config(conf)
    storage.write_json(Layout.from_config(cfg).prepared_manifest, {"stand_in": "for tests/test_dags.py"})
    make_champion(cfg, small_mnist_model["untrained"], "model_1", 0.6)
    return conf


@pytest.fixture(scope="module")
def dag_facts(tmp_path_factory, ready_conf, dist):
    return probe(tmp_path_factory.mktemp("airflow"), ready_conf, dist)


def test_dags_import_without_errors(dag_facts):
    assert dag_facts["import_errors"] == {}
    assert sorted(dag_facts["dags"]) == [DAILY, RETRAINING]


def test_a_deployment_that_is_not_ready_is_an_import_error_naming_what_to_run(tmp_path, tiny_world, dist):
    conf = write_config(tmp_path, tiny_world)
    errors = probe(tmp_path, conf, dist)["import_errors"]
    assert sorted(os.path.basename(path) for path in errors) == ["mnist_daily_scoring.py", "mnist_retraining.py"]
    for error in errors.values():
        assert error.startswith(f"RuntimeError: {conf} (profile full) is not ready: no curated data at "), error
        assert "make run PROFILE=full" in error
    (daily,) = [error for path, error in errors.items() if path.endswith("mnist_daily_scoring.py")]
    assert "has no champion to score with" in daily


def test_a_tasks_own_parse_does_not_ask_the_registry(tmp_path, tiny_world, dist, monkeypatch):
    """Airflow parses the DAG file again in every task's process, naming the task (its parsing context): the
    champion was judged by the DAG processor's parse, and MLflow's import would cost every task 2-3 s. A
    deployment with curated data and no champion is an import error for the DAG processor, not for a task."""
    conf = write_config(tmp_path, tiny_world)
    storage.write_json(Layout.from_config(load_config(conf)).prepared_manifest, {"stand_in": "for this test"})
    for home in ("processor", "task"):
        (tmp_path / home).mkdir()
    (daily,) = probe(tmp_path / "processor", conf, dist)["import_errors"].values()
    assert "has no champion to score with" in daily
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", DAILY)
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", "score_batch")
    in_a_task = probe(tmp_path / "task", conf, dist)
    assert in_a_task["import_errors"] == {} and sorted(in_a_task["dags"]) == [DAILY, RETRAINING]


def test_driver_options_in_the_config_reach_the_spark_submit_that_starts_the_driver(tmp_path, tiny_world, dist,
                                                                                    monkeypatch):
    """The driver's JVM options are fixed before the job reads its config: the DAG must pass the config's own."""
    from pipeline import driver_jvm
    options = "-XX:+UseParallelGC -Xss4m"
    conf = write_config(tmp_path, tiny_world, spark={"master": "local[2]", "log_level": "ERROR",
                                                     "settings": {driver_jvm.OPTION: options}})
    storage.write_json(Layout.from_config(load_config(conf)).prepared_manifest, {"stand_in": "for this test"})
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", DAILY)  # a task's parse: no champion needed
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", "score_batch")
    facts = probe(tmp_path, conf, dist)
    assert facts["import_errors"] == {}
    for dag in facts["dags"].values():
        assert dag["spark_settings"] and all(settings == {driver_jvm.OPTION: options}
                                             for settings in dag["spark_settings"].values())


def test_without_the_plugins_folder_the_dags_say_how_to_set_it(tmp_path, tiny_world, dist):
    errors = probe(tmp_path, write_config(tmp_path, tiny_world), dist, plugins=None)["import_errors"]
    assert len(errors) == 2
    for error in errors.values():
        assert error.startswith(f"RuntimeError: set AIRFLOW__CORE__PLUGINS_FOLDER={DAGS / 'plugins'} "), error


# Two writers on the metadata database, the way `airflow backfill create` meets a busy scheduler: a transaction
# whose first statement is a SAVEPOINT reads, another connection commits a write, then the first writes.
_SAVEPOINT_WRITER = """
import threading
from sqlalchemy import text
from airflow import settings

settings.configure_orm()  # the engine every Airflow process builds, with the deployment's connect args
with settings.engine.begin() as conn:
    conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
errors = []

def another_writer():
    try:
        with settings.engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    except Exception as error:
        errors.append(f"the other writer: {error}")

with settings.Session() as session:
    session.execute(text("SELECT count(*) FROM t")).all()
    try:
        with session.begin_nested():
            session.execute(text("SELECT count(*) FROM t")).all()
            writer = threading.Thread(target=another_writer)
            writer.start()
            writer.join(timeout=3)  # it commits now, or waits for this transaction's lock
            session.execute(text("INSERT INTO t VALUES (2)"))
        session.commit()
    except Exception as error:
        errors.append(f"the savepoint's writer: {error}")
writer.join()
with settings.engine.connect() as conn:
    print(sorted(r[0] for r in conn.exec_driver_sql("SELECT x FROM t")), errors)
"""


def test_a_write_inside_a_savepoint_waits_for_another_writer_instead_of_failing(tmp_path):
    """`airflow backfill create` failed at once with "database is locked" when the scheduler had committed
    between its savepoint's first read and its write (dags/plugins/mnist_sqlite.py)."""
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "AIRFLOW__CORE__PLUGINS_FOLDER": str(DAGS / "plugins"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "mnist_sqlite.CONNECT_ARGS"}
    proc = subprocess.run([str(AIRFLOW_BIN / "python"), "-c", _SAVEPOINT_WRITER], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "[1, 2] []"


def test_the_dags_know_the_jobs_exit_code_for_no_retry():
    assert re.search(rf"^EXIT_NOT_RETRYABLE = {EXIT_NOT_RETRYABLE}$", (DAGS / "mnist_jobs.py").read_text(), re.M)


def test_spark_tasks_take_the_pool_and_retry_only_what_a_retry_can_fix(dag_facts):
    for dag in dag_facts["dags"].values():
        assert set(dag["pools"].values()) == {SPARK_POOL}
        assert set(dag["retries"].values()) == {2}  # a job's EXIT_NOT_RETRYABLE fails its task at once


def test_a_manual_run_names_its_day_with_the_ds_param(dag_facts):
    for dag in dag_facts["dags"].values():
        assert dag["params"]["ds"]["type"] == ["null", "string"] and dag["params"]["ds"]["format"] == "date"
        assert dag["manual_with_ds"]["batch_dates"] == ["2026-11-02"]


def test_a_run_with_no_logical_date_takes_the_day_before_it_was_triggered(dag_facts):
    """`airflow dags trigger mnist_retraining` (no logical date, no data interval) at 10:00 on the 25th."""
    for dag in dag_facts["dags"].values():
        assert dag["manual_without_logical_date"]["batch_dates"] == ["2026-11-24"]


def test_a_cli_trigger_whose_interval_came_from_now_fails_instead_of_scoring_another_day(dag_facts):
    """Airflow 3.3's `dags trigger --logical-date` infers the interval from the current time, not the date."""
    # Triggered ten days after the logical date it names: the daily interval ends that day, the weekly one on the
    # Monday before.
    interval_ends = {DAILY: "2026-12-05", RETRAINING: "2026-11-30"}
    for dag_id, dag in dag_facts["dags"].items():
        (error,) = dag["cli_logical_date"]["batch_dates"]
        assert error.startswith(f"AirflowFailException: this run's data interval ends {interval_ends[dag_id]}, after "
                                "its logical date 2026-11-25"), error
        assert f"airflow dags trigger {dag_id} -c '{{\"ds\": \"YYYY-MM-DD\"}}'" in error


def test_daily_dag_scores_then_checks_drift_then_reports(dag_facts):
    assert dag_facts["dags"][DAILY]["tasks"] == {
        "score_batch": [], "check_drift": ["score_batch"], "batch_report": ["check_drift", "score_batch"],
        "fail_run_if_a_task_failed": ["batch_report", "check_drift", "score_batch"]}


def test_the_batch_report_runs_after_a_failed_drift_check_but_not_without_predictions(dag_facts):
    rules = dag_facts["dags"][DAILY]["trigger_rules"]
    assert rules["batch_report"] == "all_done_min_one_success"
    # ... and since the report is then a last task that succeeded, a watcher fails the run.
    assert rules["fail_run_if_a_task_failed"] == "one_failed"


def test_retraining_branches_on_its_decision(dag_facts):
    assert dag_facts["dags"][RETRAINING]["tasks"] == {"retrain": [], "decide": ["retrain"],
                                                      "champion_replaced": ["decide"], "champion_kept": ["decide"]}


def test_both_dags_use_data_interval_timetables_the_scheduler_can_read_back(dag_facts):
    """BatchDayTimetable is a CronDataIntervalTimetable (dags/plugins/mnist_timetable.py), registered as a plugin."""
    for dag in dag_facts["dags"].values():
        assert dag["timetable"] == dag["serialized_timetable"] == "BatchDayTimetable"


def test_scheduled_run_ids_name_the_day_they_process(dag_facts):
    daily = dag_facts["dags"][DAILY]["run_ids"]
    assert daily["scheduled"] == "scheduled__batch-2026-11-24__2026-11-25T00:00:00+00:00"
    assert daily["manual"] == "manual__2026-11-25T00:00:00+00:00"  # its day may be in its conf: Airflow's own id
    weekly = dag_facts["dags"][RETRAINING]["run_ids"]
    assert weekly["scheduled"] == "scheduled__batch-2026-11-29__2026-11-30T02:00:00+00:00"  # the week to Sunday


def test_the_daily_run_at_midnight_processes_the_day_that_ended(dag_facts):
    daily = dag_facts["dags"][DAILY]
    assert daily["scheduled"] == {"run_after": "2026-11-25T00:00:00+00:00", "batch_dates": ["2026-11-24"]}
    # `airflow dags test mnist_daily_scoring 2026-11-25` and the REST API's run dated the 25th process the same day.
    assert daily["manual"]["batch_dates"] == ["2026-11-24"]
    assert daily["backfill"]["batch_dates"] == ["2026-11-24"]


def test_daily_schedule_shorthand_would_process_the_day_that_has_not_ended(dag_facts):
    """Why the DAGs spell out their timetable: in Airflow 3 `@daily` has an empty interval on the run's own day."""
    assert dag_facts["daily_trigger_contrast"] == {
        "timetable": "CronTriggerTimetable",
        "interval": ["2026-11-25T00:00:00+00:00", "2026-11-25T00:00:00+00:00"]}


def test_weekly_retraining_covers_the_week_up_to_its_last_day(dag_facts):
    retraining = dag_facts["dags"][RETRAINING]
    assert retraining["scheduled"] == {"run_after": "2026-11-30T02:00:00+00:00", "batch_dates": ["2026-11-29"]}


def test_tasks_run_the_project_jobs_with_the_project_spark_submit(dag_facts, ready_conf):
    """...whose driver maps the classes `make setup` recorded (tests/test_spark.py proves what that does)."""
    from pipeline import driver_jvm
    for dag in dag_facts["dags"].values():
        assert dag["spark_settings"] and all(settings == {driver_jvm.OPTION: driver_jvm.java_options()}
                                             for settings in dag["spark_settings"].values())
        for task, command in dag["commands"].items():
            spark_submit, job, *args = command
            assert spark_submit == str(REPO_ROOT / ".venv" / "bin" / "spark-submit"), task
            assert (REPO_ROOT / "jobs").samefile(os.path.dirname(job)) and os.path.exists(job), (task, job)
            assert args[:2] == ["--conf", str(ready_conf)], task
            assert "--ds" in args, task
