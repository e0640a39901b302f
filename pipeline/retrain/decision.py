"""The retraining's decision record: the challenger and the champion on the untouched test set and on the newest
labelled batches (scored here with the evaluation's scorer), the rule's verdict per condition, and what the
training data held. Written to decision.json, which the retraining DAG branches on, and decision.md.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from pipeline.config import ModelConfig, PipelineConfig
from pipeline.metrics import accuracy
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


def decision_record(ds: str, run_id: str, decision: dict[str, Any], challenger_model: str, recipe: ModelConfig,
                    newest: dict[str, Any], training_data: dict[str, Any]) -> dict:
    """decision.json: `promoted` and `reason` on top (what a workflow branches on), the rule's conditions with their
    verdicts, then both models side by side on both sets, as the decision saw them (`decision`: the registry's
    PromotionDecision.to_dict(), its evidence included; read back unchanged when a retried task finds it taken).

    `newest` holds the newest batches' days, rows and whether training saw them; `training_data` the training
    set's fingerprint, origins and skipped days.
    """
    evidence = decision["evidence"]
    challenger, champion = evidence["challenger"], evidence.get("champion")
    return {
        "ds": ds, "run_id": run_id, "trained": True,
        "promoted": bool(decision["promoted"]), "reason": decision["reason"],
        "target": decision["target"], "margin": decision["margin"], "conditions": decision.get("conditions") or [],
        "decided_at": decision["decided_at"], "decision_key": decision["key"],
        "challenger": {"model": challenger_model, "version": challenger["version"], "recipe": asdict(recipe),
                       **_side(challenger)},
        "champion": None if champion is None else {"name": decision["registered_model"],
                                                   "version": champion["version"], **_side(champion)},
        "newest_batches": {key: newest[key] for key in ("days", "rows", "in_training_data")},
        "training_data": training_data,
    }


def _side(evidence: dict) -> dict:
    newest = evidence.get("newest") or {}
    return {"test_accuracy": evidence["test"]["accuracy"], "test_images": evidence["test"]["images"],
            "newest_batches_accuracy": newest.get("accuracy"), "newest_batches_images": newest.get("images")}


def decision_summary(record: dict) -> str:
    """decision.md: the decision as a person reads it, both models side by side and each condition's verdict."""
    head = f"# Retraining of {record['ds']}: {'PROMOTED' if record['promoted'] else 'champion kept'}\n\n"
    if not record.get("trained"):
        return head + f"{record['reason']}.\n"
    challenger, champion = record["challenger"], record["champion"] or {}
    newest = record["newest_batches"]

    def cell(side: dict, key: str) -> str:
        return "-" if side.get(key) is None else f"{side[key]:.4f}"
    rows = ["| | challenger | champion |", "|---|---:|---:|",
            f"| model | {challenger['model']} version {challenger['version']} | "
            f"{'version ' + str(champion['version']) if champion else 'none yet'} |",
            f"| test set ({challenger['test_images']} images) | {cell(challenger, 'test_accuracy')} | "
            f"{cell(champion, 'test_accuracy')} |",
            f"| newest labelled batches ({', '.join(newest['days']) or 'none'}; {newest['rows']} images"
            f"{', trained on' if newest['in_training_data'] else ', held out'}) | "
            f"{cell(challenger, 'newest_batches_accuracy')} | {cell(champion, 'newest_batches_accuracy')} |"]
    marks = {True: "passed", False: "FAILED", None: "does not apply"}
    conditions = [f"- **{c['name']}** ({marks[c['passed']]}): {c['detail']}" for c in record["conditions"]]
    recipe = ", ".join(f"{k} {v}" for k, v in record["challenger"]["recipe"].items())
    return (head + "\n".join(rows) + "\n\nThe rule (docs/scheduling.md, \"Retraining\"), condition by condition:\n\n"
            + "\n".join(conditions or ["- (no condition was judged)"]) + f"\n\nVerdict: {record['reason']}.\n\n"
            f"Challenger recipe: {recipe}. Decided at {record['decided_at']}.\n")


def untrained_record(ds: str, run_id: str, reason: str, training_data: dict[str, Any]) -> dict:
    """decision.json when there was nothing to retrain on: kept, and why."""
    return {"ds": ds, "run_id": run_id, "trained": False, "promoted": False, "reason": reason, "challenger": None,
            "champion": None, "newest_batches": None, "training_data": training_data}
