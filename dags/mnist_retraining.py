"""Weekly retraining: the labelled batches join the training data, a challenger is trained and evaluated with the
champion on the untouched test set and the newest labelled batches, and the registry's rule decides whether it
replaces the champion. The run branches on that decision, so the outcome is visible in the grid.

Schedule: Mondays at 02:00 UTC, for the week that has ended (its data interval). An on-demand retraining takes the
batches up to yesterday, `airflow dags trigger mnist_retraining`, or up to a day it names: `-c '{"ds": "..."}'`.
"""
from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG
from mnist_jobs import DAG_SETTINGS, decision_branch, require_ready, workflow_tasks
from mnist_timetable import BatchDayTimetable

require_ready("retraining")

with DAG(
    dag_id="mnist_retraining",
    description="Retrain on the labelled batches and promote the challenger only when it is better",
    schedule=BatchDayTimetable("0 2 * * 1", timezone="UTC"),
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["mnist", "training"],
    **DAG_SETTINGS,
) as dag:
    retrain = workflow_tasks("retraining")["retrain"]
    decide = decision_branch("decide", promoted="champion_replaced", kept="champion_kept")
    retrain >> decide >> [EmptyOperator(task_id="champion_replaced"), EmptyOperator(task_id="champion_kept")]
