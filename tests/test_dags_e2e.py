"""The DAGs run end to end with `airflow dags test` (SQLite metadata, no scheduler), local Spark, small batches,
exactly as `make schedule-demo` and a scheduler run them: every task a spark-submit of the project's jobs from
Airflow's own venv and working directory.

One module-scoped story on the tiny world, in order: a champion is registered; a day is scored, checked and
reported; retraining on the labelled day promotes a better challenger; the next day, of non-digit images, is
scored with the new champion and flagged as drift, and still gets its report (the trigger rule, run for real).

Only what needs the DAGs is run through them. A day scored again, another day left alone and a corrupt day are
the jobs' behaviour, proven at function level (tests/test_batch.py) and as spark-submitted jobs failing in one line
(tests/test_batch_drift.py); each `airflow dags test` here costs three spark-submits. The data the DAGs read is
ingested and prepared in this process, with the pipeline's own functions.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from registry_versions import make_champion

from pipeline import storage
from pipeline.config import REPO_ROOT, load_config
from pipeline.layout import Layout

pytestmark = [pytest.mark.slow, pytest.mark.airflow, pytest.mark.spark, pytest.mark.horovod]

AIRFLOW = REPO_ROOT / ".venv-airflow" / "bin" / "airflow"
GOOD_DAY, NEXT_DAY = "2026-11-20", "2026-11-24"
IMAGES_PER_DAY = 40
# The weekly run of Monday 2026-11-23 02:00 covers the week up to Sunday the 22nd, the labelled good day included.
RETRAINING_RUN, RETRAINING_DS = "2026-11-23T02:00:00+00:00", "2026-11-22"


def day_after(ds: str) -> str:
    """The date to give `airflow dags test` so that the daily run processes `ds` (the day that ended)."""
    import datetime as dt
    return (dt.date.fromisoformat(ds) + dt.timedelta(days=1)).isoformat()


class Scheduled:
    """A project config under a temp dir, an Airflow home beside it, and the commands a scheduler would run."""

    def __init__(self, root: Path, package: Path, tiny_world: Path):
        self.root = root
        self.conf = root / "conf" / "scheduled.yaml"
        self.conf.parent.mkdir(parents=True)
        self.conf.write_text(yaml.safe_dump({
            "spark": {"master": "local[2]", "log_level": "ERROR", "ui_enabled": False, "shuffle_partitions": 4,
                      "driver_memory": "2g"},
            "paths": {"root": str(root), "input": str(tiny_world), "data": "data",
                      "runs": "runs", "landing": "landing", "batches": "batches", "mlflow": "mlflow"},
            "prepare": {"validation_size": 300},
            "data": {"row_group_rows": 100},
            "train": {"models": {"model_1": {"epochs": 1}}},
            "evaluate": {"target_accuracy": 0.5, "misclassified_examples": 0},
            "retrain": {"epochs": 1},
            # The champion is an untrained network, so the model-side statistics (predicted classes, unsure
            # predictions) would flag every day: here the pixels judge; tests/test_batch_drift.py covers the rest.
            "drift": {"max_class_distance": 1.0, "max_low_confidence_share": 1.0},
        }))
        self.cfg = load_config(self.conf)
        self.layout = Layout.from_config(self.cfg)
        self.env = {**os.environ, "AIRFLOW_HOME": str(root / "airflow"),
                    "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                    "MNIST_CONF": str(self.conf), "MNIST_PACKAGE": str(package),
                    "MNIST_RETRIES": "0"}  # a failure here is the test's to see, not five minutes to wait

    def land(self, ds: str, *args: str) -> None:
        subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "simulate_arrivals.py"), "--ds", ds, "--count",
                        str(IMAGES_PER_DAY), *args, "--conf", str(self.conf)], cwd=self.root, check=True,
                       capture_output=True, timeout=600)

    def airflow(self, *args: str) -> subprocess.CompletedProcess:
        # Started from the Airflow home, as a scheduler would be: nothing may depend on the checkout as cwd.
        return subprocess.run([str(AIRFLOW), *args], cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=900)

    def daily(self, ds: str) -> subprocess.CompletedProcess:
        return self.airflow("dags", "test", "mnist_daily_scoring", day_after(ds))

    def predictions(self, spark, ds: str):
        return spark.read.parquet(self.layout.batch_files(ds).predictions)


def error_lines(proc: subprocess.CompletedProcess) -> set[str]:
    """The jobs' one-line errors as the task logs show them (Airflow prefixes its own log fields)."""
    text = proc.stdout + proc.stderr
    return {line[line.index("ERROR ["):].split(" [airflow.")[0].strip() for line in text.splitlines()
            if "ERROR [" in line}


@pytest.fixture(scope="module")
def scheduled(tmp_path_factory, dist, small_mnist_model, tiny_world, spark):
    from pipeline.data.ingest import run_ingest
    from pipeline.data.prepare import run_prepare
    env = Scheduled(tmp_path_factory.mktemp("scheduled"), dist, tiny_world)
    run_ingest(spark, env.cfg, env.layout)
    run_prepare(spark, env.cfg, env.layout)
    env.champion = make_champion(env.cfg, small_mnist_model["untrained"], "model_1", 0.6)
    migrated = env.airflow("db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    env.land(GOOD_DAY, "--labels")
    return env


@pytest.fixture(scope="module")
def good_day(scheduled):
    """The good day scored, checked and reported by the daily DAG."""
    first = scheduled.daily(GOOD_DAY)
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    return first


def test_a_day_is_scored_with_the_champion_version_in_every_row(scheduled, good_day, spark):
    predictions = scheduled.predictions(spark, GOOD_DAY)
    assert predictions.count() == IMAGES_PER_DAY
    assert {r["model_version"] for r in predictions.select("model_version").distinct().collect()} == \
        {scheduled.champion}


def test_the_day_gets_its_drift_check_and_batch_report(scheduled, good_day):
    files = scheduled.layout.batch_files(GOOD_DAY)
    assert storage.read_json(files.drift)["flagged"] is False
    html = Path(files.report_html).read_text()
    assert f"Model <code>{scheduled.cfg.tracking.registered_model}</code> version <code>{scheduled.champion}</code> " \
        "scored" in html
    assert "<img" in html and 'src="data:image/png;base64,' in html


@pytest.fixture(scope="module")
def retrained(scheduled, good_day):
    """The weekly retraining DAG, the labelled good day its newest batch (held out of training: both models are
    scored on it)."""
    proc = scheduled.airflow("dags", "test", "mnist_retraining", RETRAINING_RUN)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc


@pytest.fixture(scope="module")
def next_day(scheduled, retrained):
    """The day after the retraining: non-digit images, through the daily DAG."""
    scheduled.land(NEXT_DAY, "--kind", "noise")
    return scheduled.daily(NEXT_DAY)


def test_retraining_promotes_a_better_challenger_on_both_sets(scheduled, retrained):
    decision = storage.read_json(scheduled.layout.batch_files(RETRAINING_DS).retrain_decision)
    assert decision["promoted"] is True and decision["champion"]["version"] == scheduled.champion, decision
    assert decision["newest_batches"]["days"] == [GOOD_DAY], decision
    assert [c["passed"] for c in decision["conditions"]] == [True, True, True], decision
    log = retrained.stdout + retrained.stderr
    assert "champion_replaced" in log and "newest_batches (passed): on the 40 newest labelled images" in log


def test_the_next_day_is_scored_by_the_new_champion(scheduled, retrained, next_day, spark):
    decision = storage.read_json(scheduled.layout.batch_files(RETRAINING_DS).retrain_decision)
    versions = {r["model_version"] for r in scheduled.predictions(spark, NEXT_DAY).select("model_version").collect()}
    assert versions == {decision["challenger"]["version"]} != {scheduled.champion}


def test_a_day_of_non_digit_images_is_flagged_and_still_reported(scheduled, next_day):
    assert next_day.returncode != 0
    assert {line.split(":")[0] for line in error_lines(next_day)} == {"ERROR [check_drift]"}
    files = scheduled.layout.batch_files(NEXT_DAY)
    assert storage.read_json(files.drift)["flagged"] is True
    assert "DRIFT" in Path(files.report_html).read_text()
