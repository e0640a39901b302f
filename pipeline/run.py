"""The main job: every registered stage in order (pipeline.stages), each skipped when its output is already
complete, with a run manifest written after each one.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from datetime import UTC, datetime
from typing import Any

from pyspark.sql import SparkSession

from pipeline import storage
from pipeline.config import PipelineConfig
from pipeline.errors import GateError, PipelineError
from pipeline.layout import Layout
from pipeline.manifest import environment_facts
from pipeline.redaction import redacted
from pipeline.result import StageResult
from pipeline.stages import STAGE_NAMES, STAGES, downstream_of

log = logging.getLogger(__name__)


def stages_to_force(force: bool, from_stage: str | None) -> set[str]:
    """`--force` redoes every stage; `--from STAGE` redoes that stage and every stage downstream of it (reading
    what it writes, directly or not: --from eda redoes eda and the report, not the training)."""
    if from_stage is not None and from_stage not in STAGE_NAMES:
        raise PipelineError(f"unknown stage '{from_stage}' for --from (stages: {', '.join(STAGE_NAMES)})")
    if force:
        return set(STAGE_NAMES)
    if from_stage is None:
        return set()
    return downstream_of(from_stage)


def run_pipeline(spark: SparkSession, cfg: PipelineConfig, layout: Layout, force: bool = False,
                 from_stage: str | None = None) -> dict:
    """Run every stage; write the run manifest after each one so an interrupted run still records its progress.

    A failed quality gate (evaluate) does not stop the prediction and report stages, which show the failure;
    the run then ends with that error so a scheduled batch cannot ship a bad model silently.
    """
    forced = stages_to_force(force, from_stage)
    manifest = _new_manifest(cfg, layout)
    gate_failure: GateError | None = None
    for stage in STAGES:
        log.info("stage %s: start%s", stage.name, " (forced)" if stage.name in forced else "")
        started = time.monotonic()
        try:
            result = stage.run(spark, cfg, layout, force=stage.name in forced)
        except GateError as exc:
            gate_failure = exc
            failed = exc.result or StageResult(False, {})
            result = dataclasses.replace(failed, details={**failed.details, "gate_failed": str(exc)})
        result = dataclasses.replace(result, seconds=round(time.monotonic() - started, 1))
        manifest["stages"].append({"stage": stage.name, **result.to_dict()})
        log.info("%s", result.summary_line(stage.name))
        storage.write_json(layout.run_manifest, redacted(manifest))
    manifest["finished"] = _now()
    manifest["headline"] = _headline(manifest)
    storage.write_json(layout.run_manifest, redacted(manifest))
    log.info("run %s finished: report at %s", manifest["run_id"], layout.report_html)
    if gate_failure is not None:
        raise gate_failure
    return manifest


def _new_manifest(cfg: PipelineConfig, layout: Layout) -> dict[str, Any]:
    return {"run_id": layout.run_id, "started": _now(), "finished": None,
            "profile": cfg.profile, "config": cfg.to_redacted_dict(), **environment_facts(),
            "paths": {"raw": layout.raw, "curated": layout.curated_root, "run": layout.run_root},
            "stages": []}


def _headline(manifest: dict) -> dict:
    evaluation = next((s["details"] for s in manifest["stages"] if s["stage"] == "evaluate"), {})
    return {"best_model": evaluation.get("best_model"), "best_test_accuracy": evaluation.get("best_test_accuracy"),
            "target_met": evaluation.get("target_met"),
            "total_seconds": round(sum(s["seconds"] for s in manifest["stages"]), 1)}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
