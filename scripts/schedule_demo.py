"""make schedule-demo: three days of arrivals scored by the daily DAG, then the retraining DAG, with Airflow's
`dags test` (no scheduler, SQLite metadata under output/airflow). Prints where the batch reports and the
retraining decision are.

The days are fixed (Friday 2026-11-20 to Sunday 2026-11-22, labels arriving for the first two), so the weekly
retraining run of Monday 2026-11-23 02:00 covers them. A champion must exist for scoring: when the registry has
none, the quick profile's pipeline runs first and its best model becomes the champion.
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

from pipeline.config import load_config  # noqa: E402
from pipeline.layout import Layout  # noqa: E402

DAYS = ("2026-11-20", "2026-11-21", "2026-11-22")
LABELLED_DAYS = DAYS[:2]
RETRAINING_RUN = "2026-11-23T02:00:00+00:00"   # the Monday run whose week ends on the last day
AIRFLOW = CHECKOUT / ".venv-airflow" / "bin" / "airflow"
PYTHON = CHECKOUT / ".venv" / "bin" / "python"


def main() -> int:
    args = parse_args()
    cfg = load_config(args.conf, args.profile)
    layout = Layout.from_config(cfg)
    env = airflow_env(args)
    step("Airflow metadata database (SQLite)")
    run([str(AIRFLOW), "db", "migrate"], env=env, quiet=True)
    ensure_champion(args)
    for ds in DAYS:
        step(f"landing {ds}" + (" with labels" if ds in LABELLED_DAYS else ""))
        run([str(PYTHON), "scripts/simulate_arrivals.py", "--conf", args.conf, "--profile", args.profile,
             "--ds", ds, "--count", str(args.images), *(["--labels"] if ds in LABELLED_DAYS else [])])
    for ds in DAYS:
        run_after = (dt.date.fromisoformat(ds) + dt.timedelta(days=1)).isoformat()
        step(f"daily DAG for {ds} (airflow dags test mnist_daily_scoring {run_after})")
        run([str(AIRFLOW), "dags", "test", "mnist_daily_scoring", run_after], env=env, quiet=True)
    step(f"retraining DAG (airflow dags test mnist_retraining {RETRAINING_RUN})")
    run([str(AIRFLOW), "dags", "test", "mnist_retraining", RETRAINING_RUN], env=env, quiet=True)
    print("\nDone. Batch reports:")
    for ds in DAYS:
        print(f"  {layout.batch_files(ds).report_html}")
    print(f"Retraining decision: {layout.batch_files(DAYS[-1]).retrain_decision}")
    print(f"Airflow logs: {env['AIRFLOW_HOME']}/logs")
    return 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conf", default=str(CHECKOUT / "conf" / "local.yaml"))
    parser.add_argument("--profile", default="quick", help="the jobs' profile (default: quick, a few minutes)")
    parser.add_argument("--images", type=int, default=200, help="images landed per day")
    return parser.parse_args()


def airflow_env(args: argparse.Namespace) -> dict[str, str]:
    return {**os.environ, "AIRFLOW_HOME": str(CHECKOUT / "output" / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(CHECKOUT / "dags"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "MNIST_CONF": str(Path(args.conf).resolve()), "MNIST_PROFILE": args.profile}


def ensure_champion(args: argparse.Namespace) -> None:
    from pipeline.tracking.registry import champion
    found = champion(load_config(args.conf, args.profile))
    if found is not None:
        print(f"champion: {found.name} version {found.version}")
        return
    step(f"no champion in the registry yet: running the {args.profile} pipeline to train one")
    run([str(PYTHON), "jobs/run_pipeline.py", "--conf", args.conf, "--profile", args.profile])


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
