"""Daily scoring: the images that arrived on a day are checked, scored with the registry's champion, checked
for drift against the training data, and described in a batch report.

Schedule: at midnight UTC, for the day that has just ended (BatchDayTimetable, a CronDataIntervalTimetable;
`@daily` in Airflow 3 is a CronTriggerTimetable, whose run at midnight of the 25th would process the 25th, a day
that has not happened).
A manual run names its day: `airflow dags trigger mnist_daily_scoring -c '{"ds": "2026-12-01"}'`.
Every task replaces its own day's outputs in one move, so retries, reruns and backfills never duplicate rows or
touch another day; the Spark tasks queue on one pool, so backfills and manual runs never run beside them.
"""
from __future__ import annotations

import pendulum
from airflow.sdk import DAG, TriggerRule, task
from mnist_jobs import DAG_SETTINGS, require_ready, workflow_tasks
from mnist_timetable import BatchDayTimetable

require_ready("daily")

with DAG(
    dag_id="mnist_daily_scoring",
    description="Score the day's arrivals with the champion, check drift, write the batch report",
    schedule=BatchDayTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,            # backfill a range on purpose: airflow backfill create --dag-id ... --from-date ...
    max_active_runs=1,
    tags=["mnist", "batch"],
    **DAG_SETTINGS,
) as dag:
    # score_batch -> check_drift -> batch_report, and score_batch -> batch_report: each after what it reads.
    # check_drift writes drift.json, then fails on drift with a verdict (not retried: the job says a retry cannot
    # change it); the report shows that verdict, so it runs after a failed drift check too, not without predictions.
    tasks = workflow_tasks("daily", batch_report={"trigger_rule": TriggerRule.ALL_DONE_MIN_ONE_SUCCESS})

    @task(trigger_rule=TriggerRule.ONE_FAILED, retries=0)
    def fail_run_if_a_task_failed():
        """Airflow sets a run's state from its last tasks; the report succeeding after a failed drift check
        would otherwise mark the day's run a success."""
        raise RuntimeError("a task of this run failed: its log ends with the one-line reason")

    list(tasks.values()) >> fail_run_if_a_task_failed()
