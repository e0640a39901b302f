"""Prediction stage: score any supported input with a saved model, distributed over Spark, and write Parquet.

Outputs under <output or layout.predictions/<input name>>/: predictions.parquet (id, prediction, confidence,
probabilities, model, run_id, model_version (the registered version, null for a model not from the registry), and
label when the input has labels), metrics.json and confusion_matrix.csv when
labelled, manifest.json (what was scored with what), and for image files unreadable.csv listing every file that
could not be scored (only when skipping them is allowed; otherwise the job fails and the list is written beside
the output folder, see unreadable.py). An image folder's predictions are also printed.
"""
from __future__ import annotations

import logging

import numpy as np
import pyspark.sql.functions as F
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import FloatType, StringType

from pipeline import failures, outputs, storage
from pipeline.config import PipelineConfig
from pipeline.errors import PipelineError
from pipeline.layout import Layout, PredictionFiles
from pipeline.locks import output_lock
from pipeline.metrics import accuracy, confusion_matrix, confusion_matrix_csv
from pipeline.model_files import check_model_file
from pipeline.model_ref import ResolvedModel
from pipeline.paths import absolute, within
from pipeline.predict.inputs import (
    LoadedInput,
    PredictionInput,
    check_image_arrays,
    load_input,
    require_readable_images,
    resolve_input,
)
from pipeline.predict.model_source import choose_model
from pipeline.predict.unreadable import enforce_policy, write_list
from pipeline.record_checks import FINDINGS
from pipeline.result import StageResult
from pipeline.schema import NUM_CLASSES
from pipeline.scoring import (
    BadImageArrays,
    ParquetImages,
    confidence,
    score_image_files,
    score_images,
    score_parquet,
    scores_in_driver,
    set_arrow_batch_rows,
)

log = logging.getLogger(__name__)


def run_prediction(spark: SparkSession, cfg: PipelineConfig, layout: Layout, input_path: str | None = None,
                   model: str | None = None, output: str | None = None) -> StageResult:
    """Score `input_path` (default: the curated test set) with `model` (default: predict.model, 'best')."""
    chosen = choose_model(cfg, layout, model or cfg.predict.model)
    model_name, model_path = chosen.name, chosen.model_file
    check_model_file(model_path)  # one line on the driver, instead of a traceback from every Spark task
    source = resolve_input(layout, input_path)
    out_dir = output_folder(layout, source.name, output)
    out = PredictionFiles(out_dir)
    log.info("scoring %s (%s) with %s%s (%s)", source.path, source.kind, model_name,
             f" version {chosen.version}" if chosen.version else "", model_path)
    # The lock covers the failure list beside the folder too, from the first check to the last write.
    with output_lock(out_dir, "predict"):
        loaded = load_input(spark, cfg, layout, source)
        summary = score_and_publish(spark, cfg, layout, loaded, source, chosen, out)
        storage.remove(out.failed_unreadable_list)  # the list of an earlier failed attempt no longer applies
    log.info("%d predictions written to %s", summary["count"], out.predictions)
    if summary.get("unreadable_count"):
        log.warning("%d unreadable image file(s) skipped (predict.skip_unreadable_images), listed in %s",
                    summary["unreadable_count"], summary["unreadable_list"])
    if source.kind == "images":
        print(prediction_table(spark.read.parquet(out.predictions), source.path, cfg.predict.print_rows,
                               summary["count"]))
    return StageResult(False, {"predictions": out.predictions, "manifest": out.manifest},
                       counts={"images": summary["count"], "unreadable": summary.get("unreadable_count", 0)},
                       details=summary)


def score_and_publish(spark: SparkSession, cfg: PipelineConfig, layout: Layout, loaded: LoadedInput,
                      source: PredictionInput, model: ResolvedModel, out: PredictionFiles) -> dict:
    """Screen unreadable files, score, and publish predictions, metrics and manifest; returns the manifest."""
    set_arrow_batch_rows(spark, cfg.predict.batch_size)
    if loaded.parquet is not None:
        return score_and_publish_parquet(spark, cfg, layout, loaded.parquet, source, model, out)
    if loaded.files is None:
        scored = score_images(loaded.images, model.model_file, cfg.predict.batch_size, cfg.predict.tf_threads)
        return publish(spark, layout, scored, loaded.notes, None, source, model, out)
    # Image files are read, decoded and scored in one pass, held in memory (ten probabilities a file) while the
    # unreadable ones are screened, then written: no file is read or scored twice.
    scored_files = score_image_files(loaded.files, model.model_file, cfg.predict.batch_size, cfg.predict.tf_threads,
                                     cfg.predict.max_image_pixels).cache()
    try:
        screened, blank_notes = apply_blank_policy(scored_files, cfg.data.blank_images, source.path)
        unreadable = (screened.filter(F.col("error").isNotNull()).select("path", F.col("error").alias("reason"))
                      .unionByName(loaded.refused))
        scored = readable_files(screened)
        notes = {**loaded.notes, **blank_notes, **screen_unreadable(unreadable, scored, cfg, source.path, out)}
        return publish(spark, layout, scored, notes, unreadable, source, model, out)
    finally:
        scored_files.unpersist()


def score_and_publish_parquet(spark: SparkSession, cfg: PipelineConfig, layout: Layout, parquet: ParquetImages,
                              source: PredictionInput, model: ResolvedModel, out: PredictionFiles) -> dict:
    """Parquet scored where it is read, one pass. A bad image the workers found fails the job, named by
    check_image_arrays with every bad row counted: a pass over the input that only a failing job pays for."""
    try:
        scored = score_parquet(spark, parquet, model.model_file, cfg.predict)   # in the driver, this scores already
        notes = {"scored_in": "driver" if scores_in_driver(parquet, cfg.predict) else "executors"}
        return publish(spark, layout, scored, notes, None, source, model, out)
    except Exception as exc:
        if any(BadImageArrays.__name__ in str(link) for link in failures.chain(exc)):
            check_image_arrays(spark.read.parquet(parquet.path), parquet.path)
        raise


def publish(spark: SparkSession, layout: Layout, scored: DataFrame, notes: dict, unreadable: DataFrame | None,
            source: PredictionInput, model: ResolvedModel, out: PredictionFiles) -> dict:
    """Write the predictions, their summary, the unreadable list and the manifest in one move."""
    labelled = "label" in scored.columns
    predictions = with_prediction_columns(scored, source.id_column, labelled, model, layout.run_id)
    with outputs.publishing(out.root) as tmp_dir:
        tmp = PredictionFiles(tmp_dir)
        predictions.write.parquet(tmp.predictions)
        # Aggregates come from the written Parquet, so the model scores every row exactly once.
        summary = summarise(tmp.predictions, tmp, labelled, NUM_CLASSES)
        if notes.get("unreadable_count"):
            write_list(unreadable, tmp.unreadable_list)
        summary.update(model=model.name, model_path=model.model_file, model_version=model.version, input=source.path,
                       input_kind=source.kind, run_id=layout.run_id, output=out.root, **notes)
        storage.write_json(tmp.manifest, summary)
    return summary


def apply_blank_policy(scored_files: DataFrame, policy: str, input_path: str) -> tuple[DataFrame, dict]:
    """data.blank_images for image files, as ingest and scheduled scoring apply it: a picture with no ink (a blank
    page, an empty scan) has no digit to predict, and a model still names one with high confidence. fail: the job
    fails naming the first; warn: scored, with a warning; quarantine: set aside with the unreadable files, with
    its reason; drop: left out. Returns the files to go on with and the manifest's note."""
    blank = scored_files.filter(F.col("error").isNull() & F.col("blank"))
    count = blank.count()
    if count == 0:
        return scored_files, {}
    first = blank.agg(F.min("path")).first()[0]
    if policy == "fail":
        raise PipelineError(f"blank image {first} (no ink) in {input_path}: {count} blank file(s) and "
                            "data.blank_images is fail")
    note = {"blank_images": {"count": count, "policy": policy, "first": first}}
    if policy == "warn":
        log.warning("%d blank image(s) (no ink) scored anyway (data.blank_images=warn), the first %s", count, first)
        return scored_files, note
    if policy == "drop":
        log.info("%d blank image(s) (no ink) left out (data.blank_images=drop), the first %s", count, first)
        return scored_files.filter(~(F.col("error").isNull() & F.col("blank"))), note
    reason = F.lit(f"{FINDINGS['blank_images'].reason}: no ink (data.blank_images is quarantine)")
    return scored_files.withColumn("error", F.when(F.col("error").isNull() & F.col("blank"), reason)
                                   .otherwise(F.col("error"))), note


def screen_unreadable(unreadable: DataFrame, readable: DataFrame, cfg: PipelineConfig, input_path: str,
                      out: PredictionFiles) -> dict:
    """Image files that cannot be scored fail the job unless skipping them is allowed, and so does a folder with
    no readable one; returns the manifest's notes about them."""
    count = enforce_policy(unreadable, input_path, cfg.predict.skip_unreadable_images, out.failed_unreadable_list)
    require_readable_images(readable, input_path)
    return {"unreadable_count": count, "unreadable_list": out.unreadable_list if count else None}


def readable_files(scored_files: DataFrame) -> DataFrame:
    """The image files that were read and scored, prediction and probabilities required columns as the output
    contract has them. Every readable file has both (score_file_batches) but Spark cannot infer that from a filter:
    coalesce declares them non-null, and its fallback is never taken."""
    never_taken = F.array_repeat(F.lit(0.0).cast(FloatType()), NUM_CLASSES)
    return scored_files.filter(F.col("error").isNull()).select(
        "path", F.coalesce("prediction", F.lit(-1)).alias("prediction"),
        F.coalesce("probabilities", never_taken).alias("probabilities"))


def output_folder(layout: Layout, input_name: str, output: str | None) -> str:
    if output is None:
        return layout.prediction_dir(input_name)
    return absolute(output)


def with_prediction_columns(scored: DataFrame, id_column: str, labelled: bool, model: ResolvedModel,
                            run_id: str) -> DataFrame:
    """The output contract's columns, in order: id, [label], prediction, confidence, probabilities, model, run,
    model version (a string, null when the model is not from the registry: the same schema either way)."""
    return scored.select(id_column, *(["label"] if labelled else []), "prediction",
                         confidence().alias("confidence"), "probabilities",
                         F.lit(model.name).alias("model"), F.lit(run_id).alias("run_id"),
                         F.lit(model.version).cast(StringType()).alias("model_version"))


def summarise(predictions: str, out: PredictionFiles, labelled: bool, num_classes: int) -> dict:
    """Counts per predicted class; with labels, accuracy (metrics.json) and the confusion matrix (CSV). Read here
    from the written Parquet's two int columns: a few bytes a row, less than a Spark job costs to start."""
    table = storage.parquet_dataset(predictions).read(columns=["label", "prediction"] if labelled else ["prediction"])
    predicted = table.column("prediction").to_numpy() if table.num_rows else np.zeros(0, dtype=np.int64)
    if not labelled:
        counts = np.bincount(predicted, minlength=num_classes)
        return {"count": int(counts.sum()), "predicted_counts": {k: int(v) for k, v in enumerate(counts) if v}}
    labels = table.column("label").to_numpy() if table.num_rows else np.zeros(0, dtype=np.int64)
    matrix = confusion_matrix(labels, predicted, num_classes)
    metrics = {"count": int(matrix.sum()), "accuracy": accuracy(matrix),
               "predicted_counts": {k: int(v) for k, v in enumerate(matrix.sum(axis=0)) if v}}
    storage.write_json(out.metrics, metrics)
    storage.write_text(out.confusion_matrix, confusion_matrix_csv(matrix))
    log.info("accuracy on the labelled input: %.4f", metrics["accuracy"])
    return metrics


def prediction_table(predictions: DataFrame, folder: str, max_rows: int, total: int) -> str:
    """A short text table 'file -> label (confidence)' of the first `max_rows` files by path (of `total`)."""
    rows = predictions.select("path", "prediction", "confidence").orderBy("path").limit(max_rows).collect()
    names = [within(r["path"], folder) for r in rows]
    width = max([len("file"), *map(len, names)])
    lines = [f"{'file':<{width}}  label  confidence"]
    lines += [f"{name:<{width}}  {r['prediction']:>5}  {r['confidence']:>10.3f}"
              for name, r in zip(names, rows, strict=True)]
    if total > len(rows):
        lines.append(f"... {total - len(rows)} more in predictions.parquet")
    return "\n".join(lines)

