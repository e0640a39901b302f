"""The retraining training set of day ds: the original curated train split (origin "mnist") plus every labelled
batch up to and including ds (origin: its date), written where a retraining Layout's curated('train') points, with
a manifest of the curated manifest's shape, so the train stage reads it like any curated split.

The table is rebuilt from its sources every time, never appended to, so a rerun cannot duplicate a row. Its
fingerprint covers the original split's and the content of every labelled batch (rows, labels, pixels): a retried
task finds the same fingerprint, keeps the table and lets training resume; a label that changed rebuilds it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date
from functools import reduce

import pyspark.sql.functions as F
from pyarrow import fs as pafs
from pyspark.sql import DataFrame, SparkSession

from pipeline import outputs, storage
from pipeline.config import PipelineConfig, RetrainConfig
from pipeline.day_publication import check_readable_day
from pipeline.errors import PipelineError
from pipeline.fingerprint import fingerprint_of
from pipeline.layout import Layout, RetrainingFiles
from pipeline.retrain.labels import check_labels_known, read_labels, with_labels
from pipeline.schema import BATCH_IMAGES_SCHEMA, ORIGIN_MNIST, TRAINING_SET_SCHEMA

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchDays:
    """The days up to ds that have scored images or landed files: those with labels, and the others with why."""
    labelled: list[str] = field(default_factory=list)    # oldest first
    skipped: list[dict] = field(default_factory=list)    # {"ds": ..., "reason": ...}

    def newest(self, settings: RetrainConfig) -> list[str]:
        """The labelled days the challenger and the champion are scored on beside the test set."""
        return self.labelled[-settings.newest_days:]

    def for_training(self, settings: RetrainConfig) -> list[str]:
        if settings.hold_out_newest:
            return self.labelled[:-settings.newest_days]
        return list(self.labelled)


def find_batch_days(layout: Layout, ds: str) -> BatchDays:
    """Every day up to and including `ds` that landed or was scored, sorted into labelled and skipped ones."""
    days = sorted({day for root in (layout.landing_root, layout.batch_files(ds).table("images"))
                   for day in partition_days(root) if day <= ds})
    labelled, skipped = [], []
    for day in days:
        files = layout.batch_files(day)
        has_labels, has_images = storage.exists(files.labels), storage.exists(files.images)
        if not (has_labels and has_images):
            skipped.append({"ds": day, "reason": skip_reason(has_labels, has_images)})
            continue
        try:
            check_readable_day(files)  # its images and quarantine from one scoring: the labels check both
        except PipelineError as exc:
            skipped.append({"ds": day, "reason": str(exc)})
            continue
        labelled.append(day)
    for day in skipped:
        log.info("retraining for %s leaves out the batch of %s: %s", ds, day["ds"], day["reason"])
    return BatchDays(labelled, skipped)


def skip_reason(has_labels: bool, has_images: bool) -> str:
    if has_images:
        return "no labels.csv yet"
    if has_labels:
        return "labels.csv but no images partition: the day was not scored"
    return "not scored, no labels.csv"


def partition_days(root: str) -> list[str]:
    """The dates of the `ds=YYYY-MM-DD` folders directly under `root` (none when it does not exist)."""
    fs, path = storage.filesystem(root)
    entries = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return [entry.base_name[3:] for entry in entries
            if entry.type == pafs.FileType.Directory and entry.base_name.startswith("ds=")
            and is_date(entry.base_name[3:])]


def is_date(text: str) -> bool:
    try:
        return date.fromisoformat(text).isoformat() == text
    except ValueError:
        return False


def labelled_batch(spark: SparkSession, layout: Layout, day: str) -> DataFrame:
    """The images of `day` that have a label (TRAINING_SET_SCHEMA), after checking its labels file."""
    files = layout.batch_files(day)
    images = spark.read.schema(BATCH_IMAGES_SCHEMA).parquet(files.images)
    labels = read_labels(spark, files.labels)
    quarantined = spark.read.parquet(files.quarantine) if storage.exists(files.quarantine) else None
    check_labels_known(labels, images, quarantined, files.labels)
    return with_labels(images, labels, day)


def labelled_batches(spark: SparkSession, layout: Layout, days: list[str]) -> DataFrame | None:
    """The labelled rows of `days`, one DataFrame; None for no day."""
    frames = [labelled_batch(spark, layout, day) for day in days]
    return reduce(DataFrame.unionByName, frames) if frames else None


def content_summary(df: DataFrame) -> dict:
    """Rows per label and an order-independent checksum of the rows (record, label, pixels): one aggregation."""
    rows = (df.groupBy("label")
            .agg(F.count(F.lit(1)).alias("n"),
                 F.sum(F.xxhash64("record_id", "label", "image").cast("decimal(38,0)")).alias("checksum"))
            .collect())
    return {"label_counts": {str(r["label"]): int(r["n"]) for r in sorted(rows, key=lambda r: r["label"])},
            "checksum": str(sum(r["checksum"] for r in rows))}


def assemble_training_set(spark: SparkSession, cfg: PipelineConfig, layout: Layout, ds: str, days: BatchDays,
                          force: bool = False) -> tuple[dict, bool]:
    """Write the training set of `ds` (layout: a retraining layout) unless it is complete for the same inputs;
    returns its manifest and whether it was skipped."""
    files = RetrainingFiles(layout.retraining_root)
    prepared = outputs.read_stage_output(layout.prepared_manifest, "prepare")
    train_days = days.for_training(cfg.retrain)
    batches = {day: labelled_batch(spark, layout, day) for day in train_days}
    summaries = {day: content_summary(df) for day, df in batches.items()}
    fingerprint = fingerprint_of({"prepared": prepared["fingerprint"], "batches": summaries})
    if not force and outputs.is_complete(files.manifest, fingerprint):
        log.info("retraining data for %s already complete (%s): kept", ds, files.root)
        return storage.read_json(files.manifest), True
    storage.remove(files.manifest)  # published last: nothing trusts the table while it is rewritten
    curated_columns = [c for c in TRAINING_SET_SCHEMA.fieldNames() if c != "origin"]
    original = (spark.read.parquet(layout.prepared("train"))
                .select(*curated_columns, F.lit(ORIGIN_MNIST).alias("origin")))
    outputs.write_parquet(reduce(DataFrame.unionByName, [original, *batches.values()]), files.train,
                          cfg.data.row_group_rows)
    manifest = training_set_manifest(prepared, fingerprint, summaries, days, train_days)
    storage.write_json(files.manifest, manifest)
    log.info("retraining data for %s: %s", ds, ", ".join(f"{k} {v}" for k, v in manifest["origins"].items()))
    return manifest, False


def training_set_manifest(prepared: dict, fingerprint: str, summaries: dict, days: BatchDays,
                          train_days: list[str]) -> dict:
    """The prepared manifest with the train split's counts, schema and fingerprint replaced, plus the origins."""
    origins = {ORIGIN_MNIST: int(prepared["counts"]["train"]),
               **{day: sum(s["label_counts"].values()) for day, s in summaries.items()}}
    label_counts = dict(prepared.get("label_counts", {}))
    train_labels = dict(label_counts.get("train", {}))
    for summary in summaries.values():
        for label, n in summary["label_counts"].items():
            train_labels[label] = train_labels.get(label, 0) + n
    return {**prepared, "fingerprint": fingerprint, "prepared_fingerprint": prepared["fingerprint"],
            "counts": {**prepared["counts"], "train": sum(origins.values())},
            "label_counts": {**label_counts, "train": train_labels}, "schema": TRAINING_SET_SCHEMA.jsonValue(),
            "origins": origins, "labelled_days": train_days, "skipped_days": days.skipped}
