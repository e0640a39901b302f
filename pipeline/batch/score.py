"""Daily scoring (stage score_batch): one day's arrivals, checked like ingest checks its records, scored with one
fixed model version, published as that day's partitions.

Outputs (layout.BatchFiles): images/ds=<date>/, quarantine/ds=<date>/ and predictions/ds=<date>/ (Parquet), and
reports/ds=<date>/ holding validation_report.json and scoring.json. Each is built in a temporary sibling and
published in one move, the reports folder last (its scoring.json says the day is complete), under a lock on each
of the four folders, so a rerun or backfill of a day replaces exactly that day's folders and two jobs never write
the same day at once. A day that fails (nothing arrived, a corrupt file, too many records quarantined, a scoring
error) publishes nothing: what an earlier successful run published for that day stays as it was, whole.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pyspark.sql.functions as F
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession

from pipeline import day_publication, outputs, storage
from pipeline.batch import checks
from pipeline.batch.landing import Arrivals, read_landing
from pipeline.batch.model import scoring_model
from pipeline.config import PipelineConfig
from pipeline.errors import PipelineError
from pipeline.failures import working_on
from pipeline.layout import BatchFiles, BatchReportFiles, Layout
from pipeline.locks import output_lock
from pipeline.model_files import check_model_file
from pipeline.model_ref import ResolvedModel
from pipeline.result import StageResult
from pipeline.schema import BATCH_PREDICTIONS_SCHEMA, NUM_CLASSES
from pipeline.scoring import (
    CONFIDENCE_BINS,
    confidence,
    confidence_bin,
    prefetch_model,
    score_images,
    set_arrow_batch_rows,
)
from pipeline.spark import small_data_plans

log = logging.getLogger(__name__)

STAGE = "score_batch"


def run_batch_scoring(spark: SparkSession, cfg: PipelineConfig, layout: Layout, ds: str,
                      model: str | None = None) -> StageResult:
    """Check, publish and score the arrivals of day `ds` with `model` (default: the registry's champion)."""
    files = layout.batch_files(ds)
    scorer = scoring_model(cfg, model)   # resolved once: every row of the day names this version
    check_model_file(scorer.model_file)  # one line on the driver, instead of a traceback from every Spark task
    log.info("%s: scoring %s with %s version %s (%s)", ds, files.landing, scorer.name, scorer.version,
             scorer.model_file)
    with day_locks(files):
        arrivals = read_landing(spark, cfg, files)
        try:
            with ExitStack() as small_day:
                if arrivals.in_driver:  # scored here: load the model while Spark checks and writes the day
                    prefetch_model(scorer.model_file, cfg.predict.tf_threads)
                    small_day.enter_context(small_data_plans(spark))
                summary = check_and_publish(spark, cfg, files, arrivals, scorer)
        finally:
            arrivals.release()
    log.info("%s: %d predictions written to %s", ds, summary["count"], files.predictions)
    return StageResult(False, {"predictions": files.predictions, "images": files.images,
                               "quarantine": files.quarantine, "scoring": files.scoring},
                       counts={"images": summary["count"], "quarantined": summary["quarantined"]},
                       details={"model_version": scorer.version, "ds": ds})


@contextmanager
def day_locks(files: BatchFiles) -> Iterator[None]:
    """The lock of each folder the day publishes, always taken in the same order."""
    with ExitStack() as stack:
        for folder in (files.reports, files.images, files.quarantine, files.predictions):
            stack.enter_context(output_lock(folder, STAGE))
        yield


def check_and_publish(spark: SparkSession, cfg: PipelineConfig, files: BatchFiles, arrivals: Arrivals,
                      scorer: ResolvedModel) -> dict:
    """Judge every record; refuse the day in one line, or publish its partitions; returns the scoring summary."""
    checked = arrivals.records.transform(checks.with_blank_policy, cfg.data.blank_images).persist(
        StorageLevel.MEMORY_AND_DISK)
    try:
        report = checks.build_report(checks.record_counts(checked), cfg.data, files.ds, files.landing,
                                     arrivals.kind)
        log.info("%s: %s", files.ds, checks.summary_line(report))
        if report["error"]:
            raise PipelineError(report["error"])
        return publish_day(spark, cfg, files, checked, scorer, report, in_driver=arrivals.in_driver)
    finally:
        checked.unpersist()


def publish_day(spark: SparkSession, cfg: PipelineConfig, files: BatchFiles, checked: DataFrame,
                scorer: ResolvedModel, report: dict, *, in_driver: bool) -> dict:
    """Write the four folders in temporary siblings; on success they replace the day's in one move each, the
    reports folder last (the stack publishes in reverse order of entry), its scoring.json naming the token every
    other folder carries (pipeline/day_publication.py)."""
    rows = cfg.data.row_group_rows
    with ExitStack() as stack:
        reports, images, quarantine, predictions = (
            stack.enter_context(outputs.publishing(folder))
            for folder in (files.reports, files.images, files.quarantine, files.predictions))
        checks.valid_images(checked).write.mode("error").option("maxRecordsPerFile", rows).parquet(images)
        checks.quarantined_records(checked).write.mode("error").option("maxRecordsPerFile", rows).parquet(quarantine)
        score_to(spark, cfg, images, scorer, predictions, in_driver=in_driver)
        # The four moves are not one: readers trust the day only when every folder has this scoring's token.
        token = day_publication.new_token()
        for folder in (images, quarantine, predictions):
            day_publication.stamp(folder, token)
        summary = {**scoring_summary(spark.read.parquet(predictions), files, scorer, report,
                                     cfg.drift.low_confidence), "publication": token}
        out = BatchReportFiles(reports)
        storage.write_json(out.validation_report, report)
        storage.write_json(out.scoring, summary)
    return summary


def score_to(spark: SparkSession, cfg: PipelineConfig, images: str, scorer: ResolvedModel, out: str, *,
             in_driver: bool) -> None:
    """Score the images written at `images` (so the predictions are of exactly the rows published, decoded
    once) into Parquet at `out`, on the executors or (a small day) in the driver; a failure on the workers (a
    model that will not load, ...) names the model."""
    set_arrow_batch_rows(spark, cfg.predict.batch_size)
    with working_on(f"scoring with {scorer.name} version {scorer.version} ({scorer.model_file})"):
        scored = score_images(spark.read.parquet(images), scorer.model_file, cfg.predict.batch_size,
                              cfg.predict.tf_threads, in_driver=in_driver)
        with_batch_prediction_columns(scored, scorer).write.mode("error").option(
            "maxRecordsPerFile", cfg.data.row_group_rows).parquet(out)


def with_batch_prediction_columns(scored: DataFrame, scorer: ResolvedModel) -> DataFrame:
    """BATCH_PREDICTIONS_SCHEMA: every row names the model and the version that scored it."""
    columns = {"confidence": confidence(), "model_name": F.lit(scorer.name), "model_version": F.lit(scorer.version)}
    return scored.select(*[columns.get(field.name, F.col(field.name)).cast(field.dataType).alias(field.name)
                           for field in BATCH_PREDICTIONS_SCHEMA.fields])


def scoring_summary(predictions: DataFrame, files: BatchFiles, scorer: ResolvedModel, report: dict,
                    low_confidence: float) -> dict:
    """scoring.json: what scored the day (and the data it learnt from), how many images per predicted class, and
    how confident it was: the day's facts, computed here once for the drift check and the batch report."""
    cells = predictions.groupBy("prediction", confidence_bin().alias("bin")).count().collect()
    by_class, by_bin = [0] * NUM_CLASSES, [0] * CONFIDENCE_BINS
    for cell in cells:
        by_class[cell["prediction"]] += cell["count"]
        by_bin[cell["bin"]] += cell["count"]
    stats = predictions.agg(F.mean("confidence").alias("mean"), F.min("confidence").alias("min"),
                            F.percentile_approx("confidence", [0.1, 0.5], 1000).alias("quantiles"),
                            F.count_if(F.col("confidence") < F.lit(low_confidence)).alias("unsure")).first()
    training = None if scorer.training_data is None else dict(zip(("split", "fingerprint"), scorer.training_data,
                                                                  strict=True))
    return {"ds": files.ds, "landing": files.landing, "input_kind": report["input_kind"],
            "labels_arrived": storage.exists(files.labels),
            "model": {"name": scorer.name, "version": scorer.version, "asked": scorer.asked,
                      "model_file": scorer.model_file, "training_data": training},
            "count": sum(by_class), "quarantined": report["quarantined"], "dropped": report["dropped"],
            "predicted_counts": {str(k): by_class[k] for k in range(NUM_CLASSES)},
            "confidence": {"mean": stats["mean"], "min": stats["min"], "p10": stats["quantiles"][0],
                           "median": stats["quantiles"][1], "bins": by_bin},
            "low_confidence": {"below": low_confidence, "count": int(stats["unsure"])},
            "outputs": {"images": files.images, "quarantine": files.quarantine, "predictions": files.predictions}}
