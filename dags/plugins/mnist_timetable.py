"""The MNIST DAGs' timetable, registered as an Airflow plugin (AIRFLOW__CORE__PLUGINS_FOLDER=<checkout>/dags/plugins,
which `make airflow-up` sets): Airflow's CronDataIntervalTimetable, whose run ids name the day a run processes.

Airflow names a scheduled run after the time it runs (`scheduled__2026-11-25T00:00:00+00:00` for the run that
processes the 24th), and its grid places it there too. Here a scheduled run is
`scheduled__batch-2026-11-24__2026-11-25T00:00:00+00:00`: the batch date first, Airflow's own id after it (so ids
stay unique exactly as Airflow's are). Other runs keep Airflow's id: a manual run's day may be named in its
`conf`, which Airflow does not pass here (give it an id with `--run-id` or the REST API's `dag_run_id`), and
Airflow 3.3 names a backfill's runs itself, without asking the timetable (`backfill__<run after>`).
"""
from __future__ import annotations

import datetime as dt

from airflow.plugins_manager import AirflowPlugin
from airflow.timetables.interval import CronDataIntervalTimetable
from airflow.utils.types import DagRunType


class BatchDayTimetable(CronDataIntervalTimetable):
    """A run processes the last whole day of its data interval (dags/mnist_jobs.py batch_date); its id says which."""

    def generate_run_id(self, *, run_type, run_after, data_interval, **extra) -> str:
        run_id = super().generate_run_id(run_type=run_type, run_after=run_after, data_interval=data_interval,
                                          **extra)
        run_type = DagRunType(run_type)
        if data_interval is None or run_type != DagRunType.SCHEDULED:
            return run_id
        batch_day = (data_interval.end - dt.timedelta(days=1)).date().isoformat()
        prefix = f"{run_type.value}__"
        return f"{prefix}batch-{batch_day}__{run_id.removeprefix(prefix)}"


class MnistTimetablesPlugin(AirflowPlugin):
    name = "mnist_timetables"
    timetables = [BatchDayTimetable]
