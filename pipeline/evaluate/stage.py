"""Evaluation stage: every trained model scored on the untouched test set, compared, the best one recorded, and
a gate on the target accuracy.

Scoring is distributed with the scorer prediction uses too (pipeline.scoring); Spark aggregates the
confusion matrix and the test loss, so only those aggregates and a few misclassified examples reach the driver.
"""
from __future__ import annotations

import hashlib
import logging

import pyspark.sql.functions as F
from pyspark.sql import DataFrame, SparkSession

from pipeline import outputs, storage
from pipeline.config import PipelineConfig
from pipeline.errors import GateError, PipelineError
from pipeline.evaluate import figures
from pipeline.fingerprint import fingerprint_of
from pipeline.kept_epoch import keep_rule, kept_record
from pipeline.layout import EvaluationFiles, Layout
from pipeline.locks import output_lock
from pipeline.metrics import accuracy, confusion_matrix_csv, per_class_metrics
from pipeline.model_files import check_model_files
from pipeline.result import StageResult
from pipeline.schema import NUM_CLASSES
from pipeline.scoring import confidence, confusion_and_loss, curated_parquet, score_parquet

log = logging.getLogger(__name__)


def run_evaluation(spark: SparkSession, cfg: PipelineConfig, layout: Layout, force: bool = False) -> StageResult:
    """Evaluate the trained models on layout.curated('test'); write metrics, figures, comparison, best model."""
    models = find_trained_models(cfg, layout)
    with output_lock(layout.evaluation, "evaluate"):
        manifest_path = layout.evaluation_files.manifest
        fingerprint = evaluation_fingerprint(cfg, layout, models)
        if not force and outputs.is_complete(manifest_path, fingerprint):
            log.info("evaluation already complete for these models and test set (%s): skipped", layout.evaluation)
            summary = with_registry(spark, cfg, layout, storage.read_json(manifest_path)["summary"], fingerprint)
            return gated(summary, cfg, layout, skipped=True)
        # One line on the driver, instead of a traceback from every Spark task.
        check_model_files([layout.model_file(name) for name in models])
        test_df = read_test_set(spark, layout)
        with outputs.publishing(layout.evaluation) as tmp:
            out = EvaluationFiles(tmp)
            results = [evaluate_model(spark, cfg, test_df, name, layout, out) for name in models]
            summary = write_comparison(results, layout, out)
            storage.write_json(out.manifest, {"fingerprint": fingerprint, "summary": summary})
        log.info("evaluation written to %s; best model %s (test accuracy %.4f)", layout.evaluation,
                 summary["best_model"], summary["best_test_accuracy"])
        summary = with_registry(spark, cfg, layout, summary, fingerprint)
    return gated(summary, cfg, layout, skipped=False)


def with_registry(spark: SparkSession, cfg: PipelineConfig, layout: Layout, summary: dict, fingerprint: str) -> dict:
    """Tracking on: the summary with the registry's promotion decision (test metrics logged, challenger set, the
    champion compared on this test set); tracking off: the summary as it is, and MLflow is never imported."""
    if not cfg.tracking.enabled:
        return summary
    from pipeline.evaluate.promotion import record_in_registry

    def score_accuracy(model_file: str) -> float:
        scored = score_test_set(spark, cfg, layout, model_file)
        return accuracy(confusion_and_loss(scored, NUM_CLASSES)[0])

    decision = record_in_registry(cfg, layout, summary, fingerprint, score_accuracy)
    # The decision (PromotionDecision.to_dict() and how it was reached), or in a retraining the evidence on the test
    # set that the retraining decides with.
    return {**summary, "promotion": {k: v for k, v in decision.items() if k != "evaluation_fingerprint"}}


def find_trained_models(cfg: PipelineConfig, layout: Layout) -> list[str]:
    """Names in train.models whose folder holds model.keras and history.json (the training contract)."""
    found = []
    for name in cfg.train.models:
        if storage.exists(layout.model_file(name)) and storage.exists(layout.history(name)):
            found.append(name)
        else:
            log.warning("%s: no model.keras and history.json under %s: not evaluated", name, layout.model_dir(name))
    if not found:
        raise PipelineError(f"no trained model under {layout.training} (looked for "
                            f"{', '.join(cfg.train.models)}): run {outputs.job_for('train')} first")
    return found


def evaluation_fingerprint(cfg: PipelineConfig, layout: Layout, models: list[str]) -> str:
    """What shapes the outputs: the test set, each model's bytes and history, and the figure settings.

    The target accuracy is left out on purpose: changing it re-runs the gate, not the evaluation. The models stay
    in order (the comparison lists them in that order); each file counts by the sha256 of its bytes.
    """
    curated = (storage.read_json(layout.curated_manifest).get("fingerprint")
               if storage.exists(layout.curated_manifest) else None)
    files = [[name, _sha256(layout.model_file(name)), _sha256(layout.history(name))] for name in models]
    return fingerprint_of({"misclassified_examples": cfg.evaluate.misclassified_examples, "curated": curated,
                           "models": files})


def _sha256(path: str) -> str:
    return hashlib.sha256(storage.read_bytes(path)).hexdigest()


def read_test_set(spark: SparkSession, layout: Layout) -> DataFrame:
    path = layout.curated("test")
    outputs.require_stage_output(path, "prepare")
    return spark.read.parquet(path).select("record_id", "image", "label")


def score_test_set(spark: SparkSession, cfg: PipelineConfig, layout: Layout, model_file: str) -> DataFrame:
    """(record_id, label, prediction, probabilities) of every test image, read where it is scored (as prediction
    reads Parquet): its pixels never pass through the JVM."""
    path = layout.curated("test")
    outputs.require_stage_output(path, "prepare")
    return score_parquet(spark, curated_parquet(path), model_file, cfg.predict)


def evaluate_model(spark: SparkSession, cfg: PipelineConfig, test_df: DataFrame, name: str, layout: Layout,
                   out: EvaluationFiles) -> dict:
    """Score the test set with one model; write its metrics and figures into `out`; return its figures."""
    log.info("%s: scoring the test set", name)
    history = outputs.read_stage_output(layout.history(name), "train")
    model_path = layout.model_file(name)
    scored = score_test_set(spark, cfg, layout, model_path).cache()
    try:
        matrix, test_loss = confusion_and_loss(scored, NUM_CLASSES)
        mistakes = most_confident_mistakes(scored, test_df, cfg.evaluate.misclassified_examples)
    finally:
        scored.unpersist()
    metrics = {"model": name, "test_loss": test_loss, "test_accuracy": accuracy(matrix),
               "test_count": int(matrix.sum()), "per_class": per_class_metrics(matrix),
               "train_val_gap": train_val_gap(history)}
    storage.write_json(out.metrics(name), metrics)
    storage.write_text(out.confusion_matrix_csv(name), confusion_matrix_csv(matrix))
    storage.write_bytes(out.confusion_matrix_png(name), figures.confusion_matrix_png(
        matrix, f"{name}: test set confusion matrix (accuracy {metrics['test_accuracy']:.4f})"))
    storage.write_bytes(out.misclassified_png(name), figures.misclassified_png(
        mistakes, f"{name}: most confident mistakes ({int(matrix.sum() - matrix.trace())} in all)"))
    log.info("%s: test accuracy %.4f, test loss %.4f", name, metrics["test_accuracy"], test_loss)
    return {"metrics": metrics, "history": history, "model_path": model_path}


def most_confident_mistakes(scored: DataFrame, test_df: DataFrame, limit: int) -> list[dict]:
    """The `limit` misclassified test images the model was surest about, with their pixels (a small sample)."""
    if limit <= 0:
        return []
    mistakes = (scored.filter(F.col("prediction") != F.col("label"))
                .select("record_id", "label", "prediction", confidence().alias("confidence"))
                .orderBy(F.desc("confidence"), "record_id").limit(limit))
    rows = (mistakes.join(test_df.select("record_id", "image"), "record_id")
            .orderBy(F.desc("confidence"), "record_id").collect())
    return [row.asDict() for row in rows]


def train_val_gap(history: dict) -> dict:
    """Training minus validation accuracy, and validation minus training loss, at the kept epoch (the last, or
    the best validation epoch when the model's recipe keeps that one).

    Both are positive when the model fits the training data better than unseen data: the study's overfitting
    check. None when the history has no epochs.
    """
    if not history.get("epochs"):
        return {"accuracy": None, "loss": None, "epoch": None}
    last = kept_record(history)
    return {"accuracy": float(last["accuracy"]) - float(last["val_accuracy"]),
            "loss": float(last["val_loss"]) - float(last["loss"]), "epoch": int(last["epoch"])}


def comparison_row(result: dict) -> dict:
    """One model's line of the comparison table: size, training cost, validation and test accuracy."""
    history, metrics = result["history"], result["metrics"]
    peaks = history.get("peak_rss_mb_per_worker") or []
    return {"model": metrics["model"], "params": history.get("params"),
            "epochs": history.get("epochs_completed", len(history.get("epochs") or [])),
            "epochs_planned": history.get("epochs_planned"), "num_workers": history.get("num_workers"),
            "training_seconds": history.get("total_seconds"),
            "peak_rss_mb_per_worker": max(peaks) if peaks else None,
            "keep": keep_rule(history), "kept_epoch": kept_record(history).get("epoch"),
            "final_val_accuracy": kept_record(history).get("val_accuracy"),  # of the kept epoch
            "test_accuracy": metrics["test_accuracy"], "test_loss": metrics["test_loss"],
            "train_val_accuracy_gap": metrics["train_val_gap"]["accuracy"],
            "training_complete": history.get("complete")}


def write_comparison(results: list[dict], layout: Layout, out: EvaluationFiles) -> dict:
    """comparison.json/.md and best_model.json (highest test accuracy; fewer parameters break a tie)."""
    rows = [comparison_row(result) for result in results]
    best = max(results, key=lambda r: (r["metrics"]["test_accuracy"], -(r["history"].get("params") or 0)))
    best_name = best["metrics"]["model"]
    final_path = best["model_path"]
    storage.write_json(out.comparison, {"models": rows, "best_model": best_name})
    storage.write_text(out.comparison_table, comparison_markdown(rows, best_name))
    storage.write_json(out.best_model, {"model": best_name, "model_path": final_path,
                                        "test_accuracy": best["metrics"]["test_accuracy"]})
    return {"models": {r["model"]: {"test_accuracy": r["test_accuracy"], "test_loss": r["test_loss"]}
                       for r in rows},
            "best_model": best_name, "best_test_accuracy": best["metrics"]["test_accuracy"],
            "test_count": best["metrics"]["test_count"], "evaluation_dir": layout.evaluation}


COLUMNS = [("model", "Model", "{}"), ("params", "Parameters", "{:,}"), ("epochs", "Epochs", "{}"),
           ("training_seconds", "Training time (s)", "{:.1f}"),
           ("peak_rss_mb_per_worker", "Peak memory per worker (MB)", "{:.0f}"),
           ("kept_epoch", "Kept epoch", "{}"),
           ("final_val_accuracy", "Val. accuracy (kept epoch)", "{:.4f}"), ("test_accuracy", "Test accuracy", "{:.4f}"),
           ("test_loss", "Test loss", "{:.4f}"), ("train_val_accuracy_gap", "Train-val gap", "{:+.4f}")]


def comparison_markdown(rows: list[dict], best: str) -> str:
    """The comparison as a Markdown table; the best model in bold."""
    lines = ["| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
             "|" + "|".join("---" if key == "model" else "---:" for key, _, _ in COLUMNS) + "|"]
    for row in rows:
        cells = ["-" if row.get(key) is None else fmt.format(row[key]) for key, _, fmt in COLUMNS]
        if row["model"] == best:
            cells[0] = f"**{cells[0]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + f"\n\nBest model by test accuracy: **{best}**.\n"


def gated(summary: dict, cfg: PipelineConfig, layout: Layout, skipped: bool) -> StageResult:
    """The stage's result, judged against today's target; raises GateError (carrying the result) below it."""
    details = with_target(summary, cfg)
    result = StageResult(skipped, {"evaluation": layout.evaluation}, counts={"models": len(details["models"])},
                         details=details)
    enforce_target(result)
    return result


def with_target(summary: dict, cfg: PipelineConfig) -> dict:
    """The summary with the target of this run and whether the best model meets it (the target is not part of
    the evaluation's fingerprint, so a skipped evaluation is judged against today's target)."""
    target = cfg.evaluate.target_accuracy
    return {**summary, "target_accuracy": target, "target_met": summary["best_test_accuracy"] >= target}


def enforce_target(result: StageResult) -> None:
    """The gate: a best test accuracy under the target fails the job (after every output is written)."""
    summary = result.details
    if not summary["target_met"]:
        raise GateError(f"best model {summary['best_model']} reaches test accuracy "
                        f"{summary['best_test_accuracy']:.4f}, below the target {summary['target_accuracy']:.4f} "
                        "(evaluate.target_accuracy): do not ship it", result)
