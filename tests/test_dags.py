"""The Airflow DAGs in dags/: they import, have the expected tasks and timetables, process the day that has ended,
and call the project's jobs with the project's spark-submit. Airflow lives in its own venv (.venv-airflow, built by
`make test`), so these tests drive it through subprocesses, as a scheduler would."""
import json
import os
import subprocess

import pytest

from pipeline.config import REPO_ROOT

AIRFLOW_BIN = REPO_ROOT / ".venv-airflow" / "bin"
DAGS = REPO_ROOT / "dags"
DAILY, RETRAINING = "mnist_daily_scoring", "mnist_retraining"

pytestmark = pytest.mark.airflow


def airflow_env(home) -> dict:
    """An Airflow of its own for one test: SQLite metadata under `home`, our dags/ folder, no examples."""
    return {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__UNIT_TEST_MODE": "False"}


@pytest.fixture(scope="module")
def dag_facts(tmp_path_factory):
    """What tests/airflow_probe.py reports about dags/, for a scheduled run at midnight of 2026-11-25 and a manual
    run dated 2026-11-25."""
    home = tmp_path_factory.mktemp("airflow")
    out = home / "facts.json"
    proc = subprocess.run([str(AIRFLOW_BIN / "python"), str(REPO_ROOT / "tests" / "airflow_probe.py"), str(DAGS),
                           str(out), "2026-11-25T00:00:00+00:00", "2026-11-25T00:00:00+00:00"],
                          env=airflow_env(home), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_dags_import_without_errors(dag_facts):
    assert dag_facts["import_errors"] == {}
    assert sorted(dag_facts["dags"]) == [DAILY, RETRAINING]


def test_daily_dag_scores_then_checks_drift_then_reports(dag_facts):
    assert dag_facts["dags"][DAILY]["tasks"] == {
        "score": [], "check_drift": ["score"], "batch_report": ["check_drift", "score"],
        "fail_run_if_a_task_failed": ["batch_report", "check_drift", "score"]}


def test_the_batch_report_runs_after_a_failed_drift_check_but_not_without_predictions(dag_facts):
    rules = dag_facts["dags"][DAILY]["trigger_rules"]
    assert rules["batch_report"] == "all_done_min_one_success"
    # ... and since the report is then a last task that succeeded, a watcher fails the run.
    assert rules["fail_run_if_a_task_failed"] == "one_failed"


def test_retraining_branches_on_its_decision(dag_facts):
    assert dag_facts["dags"][RETRAINING]["tasks"] == {"retrain": [], "decide": ["retrain"],
                                                      "champion_replaced": ["decide"], "champion_kept": ["decide"]}


def test_both_dags_use_data_interval_timetables(dag_facts):
    assert {dag["timetable"] for dag in dag_facts["dags"].values()} == {"CronDataIntervalTimetable"}


def test_the_daily_run_at_midnight_processes_the_day_that_ended(dag_facts):
    daily = dag_facts["dags"][DAILY]
    assert daily["scheduled"] == {"run_after": "2026-11-25T00:00:00+00:00", "batch_dates": ["2026-11-24"]}
    # `airflow dags test mnist_daily_scoring 2026-11-25` processes the same day.
    assert daily["manual"]["batch_dates"] == ["2026-11-24"]


def test_daily_schedule_shorthand_would_process_the_day_that_has_not_ended(dag_facts):
    """Why the DAGs spell out their timetable: in Airflow 3 `@daily` has an empty interval on the run's own day."""
    assert dag_facts["daily_trigger_contrast"] == {
        "timetable": "CronTriggerTimetable",
        "interval": ["2026-11-25T00:00:00+00:00", "2026-11-25T00:00:00+00:00"]}


def test_weekly_retraining_covers_the_week_up_to_its_last_day(dag_facts):
    retraining = dag_facts["dags"][RETRAINING]
    assert retraining["scheduled"] == {"run_after": "2026-11-30T02:00:00+00:00", "batch_dates": ["2026-11-29"]}


def test_tasks_run_the_project_jobs_with_the_project_spark_submit(dag_facts):
    for dag in dag_facts["dags"].values():
        for task, command in dag["commands"].items():
            spark_submit, job, *args = command
            assert spark_submit == str(REPO_ROOT / ".venv" / "bin" / "spark-submit"), task
            assert (REPO_ROOT / "jobs").samefile(os.path.dirname(job)) and os.path.exists(job), (task, job)
            assert args[:2] == ["--conf", str(REPO_ROOT / "conf" / "local.yaml")], task
            assert "--ds" in args, task
