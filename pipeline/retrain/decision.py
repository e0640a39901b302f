"""The retraining's decision: the challenger and the champion on the untouched test set (the registry's figures)
and on the newest labelled batches (scored here with the evaluation's scorer), the promotion decision, and what
the training data held. Written to decision.json, which the retraining DAG branches on.
"""
from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame, SparkSession

from pipeline.config import PipelineConfig
from pipeline.metrics import accuracy
from pipeline.retrain.promotion import ModelVersion
from pipeline.schema import NUM_CLASSES
from pipeline.scoring import confusion_and_loss, score_images, set_arrow_batch_rows


def labelled_accuracy(spark: SparkSession, cfg: PipelineConfig, rows: DataFrame, model_file: str) -> dict:
    """Accuracy, loss and row count of the model at `model_file` on labelled `rows` (image, label columns);
    no figures (None) for no rows, rather than an accuracy of 0."""
    set_arrow_batch_rows(spark, cfg.predict.batch_size)
    scored = score_images(rows.select("image", "label"), model_file, cfg.predict.batch_size, cfg.predict.tf_threads)
    matrix, loss = confusion_and_loss(scored, NUM_CLASSES)
    total = int(matrix.sum())
    return {"accuracy": accuracy(matrix) if total else None, "loss": loss if total else None, "rows": total}


def decision_record(ds: str, run_id: str, promotion: dict[str, Any], challenger_model: str,
                    champion: ModelVersion | None, newest: dict[str, Any], training_data: dict[str, Any]) -> dict:
    """decision.json: `promoted` and `reason` on top (what a workflow branches on), then both models' figures.

    `newest` holds the newest batches' days, rows, whether training saw them, and the challenger's and the
    champion's figures on them; `training_data` the training set's fingerprint, origins and skipped days.
    """
    return {
        "ds": ds, "run_id": run_id, "trained": True,
        "promoted": bool(promotion["promoted"]), "reason": promotion["reason"],
        "target": promotion["target"], "margin": promotion["margin"],
        "challenger": {"model": challenger_model, "version": promotion["challenger_version"],
                       "test_accuracy": promotion["challenger_accuracy"],
                       "newest_batches_accuracy": newest["challenger"]["accuracy"]},
        "champion": None if champion is None else {
            "name": champion.name, "version": champion.version, "test_accuracy": promotion["champion_accuracy"],
            "newest_batches_accuracy": newest["champion"]["accuracy"]},
        "newest_batches": {key: newest[key] for key in ("days", "rows", "in_training_data")},
        "training_data": training_data,
    }


def untrained_record(ds: str, run_id: str, reason: str, training_data: dict[str, Any]) -> dict:
    """decision.json when there was nothing to retrain on: kept, and why."""
    return {"ds": ds, "run_id": run_id, "trained": False, "promoted": False, "reason": reason, "challenger": None,
            "champion": None, "newest_batches": None, "training_data": training_data}
