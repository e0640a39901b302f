"""The main job: every stage in order, each skipped when its output is already complete, with a run manifest.

ingest (with validation) -> prepare -> eda -> train -> evaluate -> predict -> report
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import SparkSession

from pipeline import storage
from pipeline.config import PipelineConfig
from pipeline.errors import GateError, PipelineError
from pipeline.layout import Layout
from pipeline.manifest import environment_facts

log = logging.getLogger(__name__)

StageFn = Callable[[SparkSession, PipelineConfig, Layout, bool], dict]


def _stage_functions() -> dict[str, StageFn]:
    # Imported here so that `--help` and config errors never pay for TensorFlow's import.
    from pipeline.data.ingest import run_ingest
    from pipeline.data.prepare import run_prepare
    from pipeline.eda.stage import run_eda
    from pipeline.evaluate.stage import run_evaluation
    from pipeline.predict.stage import run_prediction
    from pipeline.report.stage import run_report
    from pipeline.train.stage import run_training
    return {
        "ingest": lambda s, c, lay, force: run_ingest(s, c, lay, force=force),
        "prepare": lambda s, c, lay, force: run_prepare(s, c, lay, force=force),
        "eda": lambda s, c, lay, force: run_eda(s, c, lay, force=force),
        "train": lambda s, c, lay, force: _all_skipped(run_training(s, c, lay, model="all", force=force)),
        "evaluate": lambda s, c, lay, force: run_evaluation(s, c, lay, force=force),
        "predict": lambda s, c, lay, force: run_prediction(s, c, lay),
        "report": lambda s, c, lay, force: run_report(s, c, lay),
    }


def _all_skipped(per_model: dict[str, dict]) -> dict:
    """Training summarises each model; the stage counts as skipped when every model was."""
    return {**per_model, "skipped": all(summary.get("skipped") for summary in per_model.values())}


STAGES = ("ingest", "prepare", "eda", "train", "evaluate", "predict", "report")


def stages_to_force(force: bool, from_stage: str | None) -> set[str]:
    """`--force` redoes every stage; `--from STAGE` redoes that stage and every later one."""
    if from_stage is not None and from_stage not in STAGES:
        raise PipelineError(f"unknown stage '{from_stage}' for --from (stages: {', '.join(STAGES)})")
    if force:
        return set(STAGES)
    if from_stage is None:
        return set()
    return set(STAGES[STAGES.index(from_stage):])


def run_pipeline(spark: SparkSession, cfg: PipelineConfig, layout: Layout, force: bool = False,
                 from_stage: str | None = None, stage_functions: dict[str, StageFn] | None = None) -> dict:
    """Run every stage; write the run manifest after each one so an interrupted run still records its progress.

    A failed quality gate (evaluate) does not stop the prediction and report stages, which show the failure;
    the run then ends with that error so a scheduled batch cannot ship a bad model silently.
    """
    forced = stages_to_force(force, from_stage)
    functions = stage_functions or _stage_functions()
    manifest = _new_manifest(cfg, layout)
    gate_failure: GateError | None = None
    for name in STAGES:
        log.info("stage %s: start%s", name, " (forced)" if name in forced else "")
        started = time.monotonic()
        try:
            summary = functions[name](spark, cfg, layout, name in forced) or {}
        except GateError as exc:
            gate_failure, summary = exc, {**exc.summary, "gate_failed": str(exc)}
        seconds = round(time.monotonic() - started, 1)
        manifest["stages"].append({"stage": name, "seconds": seconds, "skipped": bool(summary.get("skipped")),
                                   "summary": summary})
        log.info("stage %s: %s in %.1fs | %s", name, "skipped (output complete)" if summary.get("skipped")
                 else "done", seconds, _key_figures(summary))
        storage.write_json(layout.run_manifest, manifest)
    manifest["finished"] = _now()
    manifest["headline"] = _headline(manifest)
    storage.write_json(layout.run_manifest, manifest)
    log.info("run %s finished: report at %s/report.html", manifest["run_id"], layout.run_root)
    if gate_failure is not None:
        raise gate_failure
    return manifest


def _new_manifest(cfg: PipelineConfig, layout: Layout) -> dict[str, Any]:
    return {"run_id": layout.run_root.rstrip("/").rsplit("/", 1)[-1], "started": _now(), "finished": None,
            "profile": cfg.profile, "config": cfg.to_redacted_dict(), **environment_facts(),
            "paths": {"raw": layout.raw, "curated": layout.curated_root, "run": layout.run_root},
            "stages": []}


def _headline(manifest: dict) -> dict:
    by_stage = {s["stage"]: s["summary"] for s in manifest["stages"]}
    evaluation = by_stage.get("evaluate", {})
    return {"best_model": evaluation.get("best_model"), "best_test_accuracy": evaluation.get("best_test_accuracy"),
            "target_met": evaluation.get("target_met"),
            "total_seconds": round(sum(s["seconds"] for s in manifest["stages"]), 1)}


def _key_figures(summary: dict, limit: int = 6) -> str:
    """The stage's scalar results, and per-model validation accuracy for training, on one log line."""
    flat = [f"{k}={v}" for k, v in summary.items() if k != "skipped" and isinstance(v, int | float | str | bool)]
    flat += [f"{k} val_accuracy={v['val_accuracy']:.4f}" for k, v in summary.items()
             if isinstance(v, dict) and isinstance(v.get("val_accuracy"), float)]
    return ", ".join(flat[:limit]) or "-"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
