"""What a scheduler needs to know about this deployment, answered by the project's own Python.

Airflow runs in its own venv and never imports the pipeline, so the DAGs ask it, and get one JSON object:

    python -m pipeline.deployment --conf CONF [--profile PROFILE] readiness [--without-registry]
        once per parse: the Spark master the config (with its profile) names, and the driver settings every
        spark-submit from this environment takes (its recorded classes); for each DAG its stages, each with
        its job and the stages it runs after (pipeline.stages.WORKFLOWS: the DAGs build their tasks from these
        declarations); and for each DAG the problems that would make its runs fail (no curated data, no champion),
        each one line naming what to run. The DAGs turn them into import errors, so a deployment that is not ready
        says so in the UI, not in a failed task at night. --without-registry leaves out the champion (MLflow's
        import and a registry query, 2-3 s): for a task's own parse, after the DAG processor's has judged it.
    python -m pipeline.deployment --conf CONF [--profile PROFILE] decision --ds DAY
        the retraining decision of DAY: whether it promoted, and its reason and conditions as log lines.
"""
from __future__ import annotations

import argparse
import json
import sys

from pipeline import driver_jvm, storage
from pipeline.config import PipelineConfig, load_config
from pipeline.errors import PipelineError
from pipeline.layout import Layout
from pipeline.run_ids import checked_ds


def readiness(cfg: PipelineConfig, registry: bool = True) -> dict:
    """{"spark_master", "profile", "workflows": {"daily": [...], "retraining": [...]}, "problems": {"daily": [...],
    "retraining": [...]}, "driver_settings": {...}} for this config; the registry's champion asked only if
    `registry`."""
    layout = Layout.from_config(cfg)
    first_run = f"run the pipeline first: make run PROFILE={cfg.profile} (jobs/run_pipeline.py --profile {cfg.profile})"
    both: list[str] = []
    if not storage.exists(layout.prepared_manifest):
        both.append(f"no curated data at {layout.curated_root} (the drift baseline and the retraining's training "
                    f"data): {first_run}")
    daily = list(both)
    if not cfg.tracking.enabled:
        daily.append("tracking.enabled is false: daily scoring takes its model from the registry's champion")
    elif registry:
        from pipeline.tracking.registry import champion_version
        if champion_version(cfg) is None:
            daily.append(f"registered model '{cfg.tracking.registered_model}' has no champion to score with: "
                         f"{first_run}")
    return {"spark_master": cfg.spark.master, "profile": cfg.profile, "workflows": workflows(),
            "problems": {"daily": daily, "retraining": both},
            "driver_settings": driver_jvm.spark_settings(cfg.spark.settings)}


def workflows() -> dict[str, list[dict]]:
    """Each scheduled workflow's stages in order: {"stage", "job" (under jobs/), "after" (the stages it reads)}."""
    from pipeline.stages import WORKFLOWS, upstream_of
    return {name: [{"stage": stage.name, "job": stage.job.removeprefix("jobs/"), "after": upstream_of(stage, stages)}
                   for stage in stages]
            for name, stages in WORKFLOWS.items()}


def retraining_decision(cfg: PipelineConfig, ds: str) -> dict:
    """{"promoted", "lines"}: the decision.json of day `ds`, and the evidence, condition by condition, for a log."""
    path = Layout.from_config(cfg).batch_files(ds).retrain_decision
    if not storage.exists(path):
        raise PipelineError(f"{path} not found: the retraining of {ds} has not decided (run jobs/retrain.py --ds {ds})")
    decision = storage.read_json(path)
    lines = [f"retraining {ds}: {'promoted' if decision['promoted'] else 'kept the champion'}: {decision['reason']}"]
    for condition in decision.get("conditions") or []:
        verdict = {True: "passed", False: "FAILED", None: "does not apply"}[condition["passed"]]
        lines.append(f"  {condition['name']} ({verdict}): {condition['detail']}")
    return {"promoted": bool(decision["promoted"]), "lines": lines}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conf", required=True)
    parser.add_argument("--profile", default=None)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("readiness", help="the Spark master, and what each DAG still needs").add_argument(
        "--without-registry", action="store_true", help="do not ask the registry for the champion (a task's parse)")
    commands.add_parser("decision", help="a day's retraining decision").add_argument("--ds", required=True)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.conf, args.profile)
        if args.command == "decision":
            checked_ds(args.ds)
        answer = (readiness(cfg, registry=not args.without_registry) if args.command == "readiness"
                  else retraining_decision(cfg, args.ds))
        print(json.dumps(answer))
    except PipelineError as exc:
        print(f"ERROR [deployment]: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
