"""Run by the Airflow venv's Python (tests/test_dags.py): loads dags/ the way Airflow's DAG processor does and
prints, as JSON, what the tests check: import errors, each DAG's timetable, tasks and pools, and the batch date
its templates give each kind of run. Airflow is not importable from the project's venv."""
import json
import sys
from types import SimpleNamespace

import pendulum
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import DAG
from airflow.sdk.execution_time import macros
from airflow.serialization.decoders import decode_timetable
from airflow.serialization.encoders import coerce_to_core_timetable, encode_timetable
from airflow.timetables.base import DataInterval, TimeRestriction
from airflow.utils.types import DagRunType

dags_folder, out_file = sys.argv[1], sys.argv[2]
scheduled_at, manual_at = pendulum.parse(sys.argv[3]), pendulum.parse(sys.argv[4])
sys.path.append(dags_folder)  # as Airflow's bundle does, so the DAGs import their helper module
bag = DagBag(dags_folder)


def batch_date(dag, task, run_type: str, interval: DataInterval | None, logical_date=None, run_after=None,
               ds=None) -> str:
    """The --ds the task's template gives a run of `run_type`, as the task runner renders it (the run's context
    holds its dag_run and params); an AirflowFailException's message, for a run that must not start."""
    args = task.application_args
    template = args[args.index("--ds") + 1]
    dag_run = SimpleNamespace(dag_id=dag.dag_id, run_type=run_type, logical_date=logical_date,
                              data_interval_end=interval and interval.end, run_after=run_after or interval.end)
    try:
        return dag.get_template_env().from_string(template).render(
            dag_run=dag_run, params={**dag.params.dump(), "ds": ds}, macros=macros, **dag.user_defined_macros)
    except Exception as exc:  # noqa: BLE001 - reported to the test, which checks the message
        return f"{type(exc).__name__}: {exc}"


def scheduled_run(timetable, start_date):
    """The first run the scheduler would start at or after `scheduled_at` (catching up from the start date)."""
    restriction = TimeRestriction(earliest=start_date, latest=None, catchup=True)
    info = timetable.next_dagrun_info(last_automated_data_interval=None, restriction=restriction)
    while info.run_after < scheduled_at:
        info = timetable.next_dagrun_info(last_automated_data_interval=info.data_interval, restriction=restriction)
    return info


def describe(dag) -> dict:
    timetable = dag.timetable
    scheduled = scheduled_run(timetable, dag.start_date)
    manual = timetable.infer_manual_data_interval(run_after=manual_at)
    # What Airflow 3.3's `dags trigger --logical-date` does: the interval inferred from the current time.
    cli_interval = timetable.infer_manual_data_interval(run_after=manual_at.add(days=10))
    spark_tasks = [t for t in dag.tasks if getattr(t, "application_args", None)]

    def dates(*args, **kwargs) -> list[str]:
        return sorted({batch_date(dag, t, *args, **kwargs) for t in spark_tasks})
    return {
        "timetable": type(timetable).__name__,
        "tasks": {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks},
        "trigger_rules": {t.task_id: str(t.trigger_rule.value) for t in dag.tasks},
        "pools": {t.task_id: t.pool for t in spark_tasks},
        "retries": {t.task_id: t.retries for t in spark_tasks},
        "params": {name: dag.params.get_param(name).schema for name in dag.params},
        "scheduled": {"run_after": scheduled.run_after.isoformat(),
                      "batch_dates": dates("scheduled", scheduled.data_interval, scheduled.data_interval.start)},
        "backfill": {"batch_dates": dates("backfill", scheduled.data_interval, scheduled.data_interval.start)},
        "manual": {"batch_dates": dates("manual", manual, manual_at)},
        "manual_with_ds": {"batch_dates": dates("manual", manual, manual_at, ds="2026-11-02")},
        "manual_without_logical_date": {"batch_dates": dates("manual", None, None,
                                                             run_after=manual_at.add(hours=10))},
        "cli_logical_date": {"batch_dates": dates("manual", cli_interval, manual_at)},
        "commands": {t.task_id: [t._spark_binary, t.application, *t.application_args] for t in spark_tasks},
        "spark_settings": {t.task_id: t.conf for t in spark_tasks},
        # What the scheduler reads back from the serialized DAG (a custom timetable must be a registered plugin).
        "serialized_timetable": type(decode_timetable(encode_timetable(timetable))).__name__,
        "run_ids": {kind.value: timetable.generate_run_id(run_type=kind, run_after=scheduled.run_after,
                                                          data_interval=scheduled.data_interval)
                    for kind in (DagRunType.SCHEDULED, DagRunType.MANUAL)},
    }


def daily_trigger_contrast() -> dict:
    """What `schedule="@daily"` would give the run at `scheduled_at`: Airflow 3 makes it a CronTriggerTimetable,
    whose interval is empty and whose date is the run's own day."""
    dag = DAG("contrast", schedule="@daily", start_date=pendulum.datetime(2026, 11, 1, tz="UTC"))
    timetable = coerce_to_core_timetable(dag.timetable)  # what the scheduler runs
    run = scheduled_run(timetable, dag.start_date)
    return {"timetable": type(timetable).__name__, "interval": [run.data_interval.start.isoformat(),
                                                                      run.data_interval.end.isoformat()]}


# Written to a file: Airflow logs to stdout.
with open(out_file, "w") as out:
    json.dump({"import_errors": {k: v.splitlines()[-1] for k, v in bag.import_errors.items()},
              "daily_trigger_contrast": daily_trigger_contrast(),
              "dags": {dag_id: describe(dag) for dag_id, dag in bag.dags.items()}}, out)
