"""make schedule-demo: three days of arrivals scored by the daily DAG, then the retraining DAG, with Airflow's
`dags test` (no scheduler, SQLite metadata under output/airflow-demo, apart from `make airflow-up`'s). Prints where
the batch reports and the retraining decision are.

The days are fixed (Friday 2026-11-20 to Sunday 2026-11-22, labels arriving for the first two), so the weekly
retraining run of Monday 2026-11-23 02:00 covers them. The profile's pipeline runs first (it skips what is done):
the drift check measures against its training data, and when the registry has no champion yet its best model
becomes the first one.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(CHECKOUT))

from pipeline import storage  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.layout import BatchFiles, Layout  # noqa: E402

DAYS = ("2026-11-20", "2026-11-21", "2026-11-22")
LABELLED_DAYS = DAYS[:2]
RETRAINING_RUN = "2026-11-23T02:00:00+00:00"   # the Monday run whose week ends on the last day
RETRAINING_DS = DAYS[-1]                        # the batch date that run processes: the week's last day
AIRFLOW = CHECKOUT / ".venv-airflow" / "bin" / "airflow"
PYTHON = CHECKOUT / ".venv" / "bin" / "python"


def main() -> int:
    args = parse_args()
    cfg = load_config(args.conf, args.profile)
    layout = Layout.from_config(cfg)
    env = airflow_env(args)
    step("Airflow metadata database (SQLite)")
    run([str(AIRFLOW), "db", "migrate"], env=env, quiet=True)
    step(f"the {args.profile} pipeline (its training data is the drift baseline; its best model the first champion)")
    run([str(PYTHON), "jobs/run_pipeline.py", "--conf", args.conf, "--profile", args.profile])
    for ds in DAYS:
        step(f"landing {ds}" + (" with labels" if ds in LABELLED_DAYS else ""))
        run([str(PYTHON), "scripts/simulate_arrivals.py", "--conf", args.conf, "--profile", args.profile,
             "--ds", ds, "--count", str(args.images), *(["--labels"] if ds in LABELLED_DAYS else [])])
    for ds in DAYS:
        run_after = (dt.date.fromisoformat(ds) + dt.timedelta(days=1)).isoformat()
        step(f"daily DAG for {ds} (airflow dags test mnist_daily_scoring {run_after})")
        run([str(AIRFLOW), "dags", "test", "mnist_daily_scoring", run_after], env=env, quiet=True)
        print(day_summary(layout.batch_files(ds)))
    step(f"retraining DAG (airflow dags test mnist_retraining {RETRAINING_RUN})")
    run([str(AIRFLOW), "dags", "test", "mnist_retraining", RETRAINING_RUN], env=env, quiet=True)
    decision_file = layout.batch_files(RETRAINING_DS).retrain_decision
    print(storage.read_text(layout.batch_files(RETRAINING_DS).retraining.decision_summary))  # both models, both sets
    print("\nDone. Batch reports:")
    for ds in DAYS:
        print(f"  {layout.batch_files(ds).report_html}")
    print(f"Retraining decision: {decision_file} (and decision.md beside it)")
    print(f"Airflow logs: {env['AIRFLOW_HOME']}/logs (metadata: {env['AIRFLOW_HOME']}/airflow.db)")
    return 0


def day_summary(files: BatchFiles) -> str:
    scoring, drift = storage.read_json(files.scoring), storage.read_json(files.drift)
    return (f"   {scoring['count']} images scored by {scoring['model']['name']} version {scoring['model']['version']}, "
            f"{scoring['quarantined']} quarantined; {drift['verdict']}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conf", default=str(CHECKOUT / "conf" / "local.yaml"))
    parser.add_argument("--profile", default="quick", help="the jobs' profile (default: quick, a few minutes)")
    parser.add_argument("--images", type=int, default=200, help="images landed per day")
    return parser.parse_args()


def airflow_env(args: argparse.Namespace) -> dict[str, str]:
    return {**os.environ, "AIRFLOW_HOME": str(CHECKOUT / "output" / "airflow-demo"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(CHECKOUT / "dags"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(CHECKOUT / "dags" / "plugins"),
            "MNIST_CONF": str(Path(args.conf).resolve()), "MNIST_PROFILE": args.profile}


def step(text: str) -> None:
    print(f"\n>> {text}", flush=True)


def run(command: list[str], env: dict[str, str] | None = None, quiet: bool = False) -> None:
    """Run `command` from the checkout; Airflow's own chatter goes to a log file unless the command fails."""
    if not quiet:
        subprocess.run(command, cwd=CHECKOUT, env=env, check=True)
        return
    proc = subprocess.run(command, cwd=CHECKOUT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        print((proc.stdout + proc.stderr)[-4000:])
        raise SystemExit(f"ERROR [schedule-demo]: {' '.join(command[1:4])} failed (exit {proc.returncode})")


if __name__ == "__main__":
    raise SystemExit(main())
