"""The DAGs under a real Airflow, as a deployment runs them: `make airflow-up`'s api-server, scheduler,
dag-processor and triggerer (SQLite, LocalExecutor, loopback), triggered from its CLI and its REST API, and
backfilled, with every task a spark-submit of the project's jobs on the tiny world.

One module-scoped story, in order:
1. Unpausing the daily DAG schedules the day that ended (yesterday): nothing landed then, so it fails on its first
   attempt, retries left unused. A good day named by its `ds` from the CLI is scored with the champion, checked
   and reported.
2. Unpausing the retraining DAG schedules the week that ended: it trains on the labelled good day and promotes.
3. At once: a day of non-digit images named through the REST API, a backfill of two past days, and a retraining
   triggered with no logical date. Each processes exactly its day; the non-digit day is scored by the new
   champion, flagged and still reported; and no two Spark tasks ever ran at the same time (the pool).
4. `make airflow-down` leaves no process and no listener; while it ran, every listener was on loopback.
Days are counted back from today, so that the scheduled runs (which take the day or week that has ended) see them.
"""
from __future__ import annotations

import datetime as dt
import itertools
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from listening import is_loopback
from registry_versions import make_champion
from scheduled import AIRFLOW, DAILY, RETRAINING, SPARK_POOL, Airflow, write_config

from pipeline import storage
from pipeline.config import REPO_ROOT, load_config
from pipeline.layout import Layout

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.spark, pytest.mark.horovod]

# The story needs one calendar day (UTC): at midnight the scheduler starts the next day's run on its own, and every
# day below is counted back from today. The module takes about 8 minutes; started closer to midnight than
# STORY_MINUTES, the deployment waits for the new day before it starts.
STORY_MINUTES = 20
TODAY = (dt.datetime.now(dt.UTC) + dt.timedelta(minutes=STORY_MINUTES)).date()


def wait_for_the_story_day() -> None:
    while dt.datetime.now(dt.UTC).date() < TODAY:
        time.sleep(5)


def day(days_ago: int) -> str:
    return (TODAY - dt.timedelta(days=days_ago)).isoformat()


YESTERDAY = day(1)  # what the scheduled daily run processes on unpausing: nothing landed
GOOD_DAY, BACKFILLED, NEXT_DAY = day(10), (day(9), day(8)), day(7)
IMAGES_PER_DAY = 40


class Deployment:
    def __init__(self, root: Path, conf: Path, airflow: Airflow):
        self.root, self.conf, self.airflow = root, conf, airflow
        self.cfg = load_config(conf)
        self.layout = Layout.from_config(self.cfg)
        self.champion: str | None = None
        self.listeners: set[tuple[int, str, int]] = set()

    def land(self, ds: str, *args: str) -> None:
        subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "simulate_arrivals.py"), "--ds", ds, "--count",
                        str(IMAGES_PER_DAY), *args, "--conf", str(self.conf)], cwd=self.root, check=True,
                       capture_output=True, timeout=600)

    def sample_listeners(self) -> None:
        """The listening sockets of every process Airflow's components started (tasks and their JVMs included)."""
        pids = set()
        for proc in storage.read_json(str(self.airflow.home / "pids.json"))["processes"]:
            try:
                parent = psutil.Process(proc["pid"])
                pids |= {parent.pid} | {child.pid for child in parent.children(recursive=True)}
            except psutil.NoSuchProcess:
                continue
        self.listeners |= {(c.pid, c.laddr.ip, c.laddr.port) for c in psutil.net_connections(kind="inet")
                           if c.status == psutil.CONN_LISTEN and c.pid in pids}

    def batch_dates(self, dag_id: str, run: dict) -> set[str]:
        """The --ds every Spark task of `run` was given (its rendered arguments)."""
        dates = set()
        for ti in self.airflow.task_instances(dag_id, run["dag_run_id"]).values():
            args = (ti.get("rendered_fields") or {}).get("application_args")
            if args:
                dates.add(args[args.index("--ds") + 1])
        return dates


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, dist, small_mnist_model, tiny_world, spark):
    from pipeline.data.ingest import run_ingest
    from pipeline.data.prepare import run_prepare
    wait_for_the_story_day()
    root = tmp_path_factory.mktemp("deployment")
    conf = write_config(root, tiny_world)
    env = Deployment(root, conf, Airflow(root, conf, dist))
    run_ingest(spark, env.cfg, env.layout)
    run_prepare(spark, env.cfg, env.layout)
    env.champion = make_champion(env.cfg, small_mnist_model["untrained"], "model_1", 0.6)
    env.land(GOOD_DAY, "--labels")
    for ds in BACKFILLED:
        env.land(ds)
    env.land(NEXT_DAY, "--kind", "noise")
    started = env.airflow.service("up")
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        env.up_output = started.stdout
        env.sample_listeners()
        env.airflow.wait_for_dags((DAILY, RETRAINING))
        yield env
    finally:
        env.stopped = env.airflow.service("down")


@pytest.fixture(scope="module")
def first_days(deployment):
    """Unpausing the daily DAG (its scheduled run: yesterday), and the good day named by its ds from the CLI."""
    airflow = deployment.airflow
    airflow.cli("dags", "unpause", DAILY)
    airflow.cli("dags", "trigger", DAILY, "--conf", f'{{"ds": "{GOOD_DAY}"}}')
    deployment.sample_listeners()
    return {run["run_type"]: run for run in airflow.wait_for_runs(DAILY, 2)}


def test_up_prints_the_login_and_listens_on_loopback_only(deployment):
    assert f"{deployment.airflow.url} (login admin / {deployment.airflow.password()})" in deployment.up_output
    assert {port for _, _, port in deployment.listeners} >= {deployment.airflow.port}
    assert all(is_loopback(address) for _, address, _ in deployment.listeners), deployment.listeners


def test_every_airflow_process_waits_a_minute_for_the_sqlite_database(deployment):
    """The components and CLI commands share one SQLite file: at pysqlite's 5 s a loaded machine gave `airflow
    backfill create` "database is locked" (dags/plugins/mnist_sqlite.py)."""
    probe = ("from airflow import settings\n"
             "with settings.engine.connect() as c: print(c.exec_driver_sql('PRAGMA busy_timeout').scalar())")
    asked = subprocess.run([str(AIRFLOW.parent / "python"), "-c", probe], env=deployment.airflow.env,
                           capture_output=True, text=True, timeout=120)
    assert asked.stdout.strip().splitlines()[-1] == "60000", asked.stderr[-2000:]


def test_the_pool_holds_one_spark_job(deployment):
    pool = deployment.airflow.api("GET", f"/pools/{SPARK_POOL}")
    assert pool["slots"] == 1


def test_a_scheduled_run_takes_the_day_that_ended_and_fails_at_once_without_its_landing_folder(deployment,
                                                                                               first_days):
    scheduled = first_days["scheduled"]
    assert scheduled["state"] == "failed"
    assert deployment.batch_dates(DAILY, scheduled) == {YESTERDAY}
    assert scheduled["dag_run_id"].startswith(f"scheduled__batch-{YESTERDAY}__"), scheduled  # its day, in its id
    score = deployment.airflow.task_instances(DAILY, scheduled["dag_run_id"])["score_batch"]
    # A missing landing folder is not something a retry fixes: one attempt, though two retries are configured.
    assert (score["state"], score["try_number"], score["max_tries"]) == ("failed", 1, 2), score
    log = deployment.airflow.task_log(DAILY, scheduled["dag_run_id"], "score_batch")
    assert f"no landing folder for {YESTERDAY}" in log


def test_a_day_named_from_the_cli_is_scored_checked_and_reported(deployment, first_days, spark):
    manual = first_days["manual"]
    assert manual["state"] == "success" and manual["conf"] == {"ds": GOOD_DAY}
    assert deployment.batch_dates(DAILY, manual) == {GOOD_DAY}
    files = deployment.layout.batch_files(GOOD_DAY)
    predictions = spark.read.parquet(files.predictions)
    assert predictions.count() == IMAGES_PER_DAY
    assert {r["model_version"] for r in predictions.select("model_version").distinct().collect()} == \
        {deployment.champion}
    assert storage.read_json(files.drift)["flagged"] is False
    html = Path(files.report_html).read_text()
    assert f"version <code>{deployment.champion}</code> scored" in html and 'src="data:image/png;base64,' in html


@pytest.fixture(scope="module")
def weekly(deployment, first_days):
    """Unpausing the retraining DAG: its scheduled run, for the week that has ended."""
    deployment.airflow.cli("dags", "unpause", RETRAINING)
    (run,) = deployment.airflow.wait_for_runs(RETRAINING, 1)
    return run


def test_the_weekly_run_retrains_on_the_labelled_day_and_promotes(deployment, weekly):
    assert weekly["run_type"] == "scheduled" and weekly["state"] == "success", weekly
    (ds,) = deployment.batch_dates(RETRAINING, weekly)
    assert dt.date.fromisoformat(ds).weekday() == 6 and GOOD_DAY <= ds < TODAY.isoformat()  # the Sunday that ended
    assert weekly["dag_run_id"].startswith(f"scheduled__batch-{ds}__"), weekly
    decision = storage.read_json(deployment.layout.batch_files(ds).retrain_decision)
    assert decision["promoted"] is True and decision["champion"]["version"] == deployment.champion, decision
    assert decision["newest_batches"]["days"] == [GOOD_DAY], decision
    tasks = deployment.airflow.task_instances(RETRAINING, weekly["dag_run_id"])
    assert (tasks["champion_replaced"]["state"], tasks["champion_kept"]["state"]) == ("success", "skipped")
    log = deployment.airflow.task_log(RETRAINING, weekly["dag_run_id"], "decide")
    assert f"newest_batches (passed): on the {IMAGES_PER_DAY} newest labelled images" in log
    assert "ERROR" not in log and "Traceback" not in log


@pytest.fixture(scope="module")
def concurrent(deployment, weekly):
    """A day named through the REST API, a backfill of two past days and a retraining with no logical date,
    started together: the pool decides what runs."""
    airflow = deployment.airflow
    airflow.api("POST", f"/dags/{DAILY}/dagRuns", {"logical_date": None, "conf": {"ds": NEXT_DAY}})
    airflow.cli("backfill", "create", "--dag-id", DAILY, "--from-date", BACKFILLED[0], "--to-date", BACKFILLED[-1])
    airflow.cli("dags", "trigger", RETRAINING)
    deployment.sample_listeners()
    daily = airflow.wait_for_runs(DAILY, 5)
    deployment.sample_listeners()
    return {"daily": daily, "retraining": airflow.wait_for_runs(RETRAINING, 2)}


def test_a_day_named_through_the_rest_api_is_scored_by_the_new_champion_flagged_and_reported(deployment,
                                                                                              concurrent, spark):
    (run,) = [r for r in concurrent["daily"] if (r["conf"] or {}).get("ds") == NEXT_DAY]
    assert deployment.batch_dates(DAILY, run) == {NEXT_DAY}
    assert run["state"] == "failed"  # the drift check's verdict fails the run ...
    tasks = deployment.airflow.task_instances(DAILY, run["dag_run_id"])
    assert {name: tasks[name]["state"] for name in ("score_batch", "check_drift", "batch_report")} == {
        "score_batch": "success", "check_drift": "failed", "batch_report": "success"}  # ... and the report still runs
    assert tasks["check_drift"]["try_number"] == 1  # a verdict is not retried
    files = deployment.layout.batch_files(NEXT_DAY)
    assert storage.read_json(files.drift)["flagged"] is True and "DRIFT" in Path(files.report_html).read_text()
    versions = {r["model_version"] for r in spark.read.parquet(files.predictions).select("model_version").collect()}
    assert len(versions) == 1 and versions != {deployment.champion}


def test_a_backfill_processes_each_of_its_days(deployment, concurrent):
    backfilled = [r for r in concurrent["daily"] if r["run_type"] == "backfill"]
    assert sorted(d for r in backfilled for d in deployment.batch_dates(DAILY, r)) == list(BACKFILLED)
    assert all(r["state"] == "success" for r in backfilled), backfilled
    for ds in BACKFILLED:
        assert storage.exists(deployment.layout.batch_files(ds).report_html)


def test_a_retraining_triggered_with_no_logical_date_takes_the_batches_up_to_yesterday(deployment, concurrent):
    (run,) = [r for r in concurrent["retraining"] if r["run_type"] == "manual"]
    assert run["logical_date"] is None and run["state"] == "success", run
    assert deployment.batch_dates(RETRAINING, run) == {YESTERDAY}
    assert storage.exists(deployment.layout.batch_files(YESTERDAY).retrain_decision)


def test_no_two_spark_tasks_ever_ran_at_once(deployment, concurrent):
    spans = []
    for dag_id, runs in ((DAILY, concurrent["daily"]), (RETRAINING, concurrent["retraining"])):
        for run in runs:
            for ti in deployment.airflow.task_instances(dag_id, run["dag_run_id"]).values():
                # A task marked upstream_failed never ran (try 0), though Airflow gives it a start and an end date.
                if ti["pool"] == SPARK_POOL and ti["start_date"] and ti["try_number"] > 0:
                    spans.append((ti["start_date"], ti["end_date"], f"{run['dag_run_id']}.{ti['task_id']}"))
    spans.sort()
    assert len(spans) >= 12
    overlapping = [(a[2], b[2]) for a, b in itertools.pairwise(spans) if b[0] < a[1]]
    assert not overlapping, overlapping


def test_down_stops_everything_it_started(deployment, concurrent):
    assert all(is_loopback(address) for _, address, _ in deployment.listeners), deployment.listeners
    groups = {p["pid"] for p in storage.read_json(str(deployment.airflow.home / "pids.json"))["processes"]}
    stopped = deployment.airflow.service("down")
    assert stopped.returncode == 0 and stopped.stdout.startswith("Airflow down: stopped api-server, scheduler"), \
        stopped.stdout + stopped.stderr
    assert not [p for p in psutil.process_iter(["status"]) if _group(p) in groups
                and p.info["status"] != psutil.STATUS_ZOMBIE], "a process `up` started outlived `down`"
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", deployment.airflow.port)) != 0


def _group(process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except OSError:
        return None
