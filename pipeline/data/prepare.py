"""Prepare stage: raw table -> normalised float32 images -> curated train / validation / test for Petastorm.

Each split is published atomically and the manifest last: a later stage trusts a split only when the manifest
exists with the current fingerprint.
"""
from __future__ import annotations

import logging
import time

import pyspark.sql.functions as F
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession

from pipeline import storage
from pipeline.config import PipelineConfig
from pipeline.data.split import assign_splits, plan_ranges
from pipeline.errors import PipelineError
from pipeline.fingerprint import fingerprint_of
from pipeline.layout import SPLITS, Layout
from pipeline.locks import output_lock
from pipeline.result import StageResult
from pipeline.schema import CURATED_SCHEMA, IMAGE_SHAPE, NORMALISATION, NUM_CLASSES, RAW_SCHEMA, normalise_images

log = logging.getLogger(__name__)


def run_prepare(spark: SparkSession, cfg: PipelineConfig, layout: Layout, force: bool = False) -> StageResult:
    """Write layout.curated(split) for every split and layout.curated_manifest; skip when already complete."""
    started = time.monotonic()
    raw_manifest = storage.read_stage_output(layout.raw_manifest, "ingest")  # published last: the raw table is whole
    fingerprint = prepare_fingerprint(raw_manifest["fingerprint"], cfg.section_hash("data", "prepare"))
    with output_lock(layout.curated_root, "prepare"):
        if not force and storage.is_complete(layout.curated_manifest, fingerprint):
            log.info("prepare: skipped, %s is already complete for this raw table and config (--force redoes it)",
                     layout.curated_root)
            return _result(storage.read_json(layout.curated_manifest), layout, skipped=True)
        manifest = write_curated_splits(spark, cfg, layout, raw_manifest, fingerprint)
    log.info("prepare: %s in %.1fs", ", ".join(f"{s} {n}" for s, n in manifest["counts"].items()),
             time.monotonic() - started)
    return _result(manifest, layout, skipped=False)


def write_curated_splits(spark: SparkSession, cfg: PipelineConfig, layout: Layout, raw_manifest: dict,
                         fingerprint: str) -> dict:
    """Every split, then the manifest that makes them trusted (removed first: no reader trusts a mix)."""
    storage.remove(layout.curated_manifest)
    ranges = plan_ranges(raw_manifest["label_counts"], cfg.prepare)
    raw = spark.read.schema(RAW_SCHEMA).parquet(layout.raw)
    assigned = assign_splits(raw, ranges, cfg.prepare.seed).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        label_counts = _label_counts(assigned, ranges)
        for split in SPLITS:
            log.info("prepare: writing %s (%d records)", split, sum(label_counts[split].values()))
            storage.write_parquet(curated_split(raw, assigned, split), layout.curated(split), cfg.data.row_group_rows)
    finally:
        assigned.unpersist()
    manifest = curated_manifest(cfg, fingerprint, raw_manifest, label_counts)
    storage.write_json(layout.curated_manifest, manifest)
    return manifest


def prepare_fingerprint(raw_fingerprint: str, config_hash: str) -> str:
    return fingerprint_of({"raw": raw_fingerprint, "config": config_hash})


def curated_split(raw: DataFrame, assigned: DataFrame, split: str) -> DataFrame:
    """The records of `split`, normalised. The id list is small (no images), so it is broadcast: no shuffle."""
    ids = assigned.filter(F.col("split") == split).select("record_id")
    return raw.join(F.broadcast(ids), "record_id").select("record_id", "image", "label").transform(normalise_images)


def _label_counts(assigned: DataFrame, ranges: list[tuple]) -> dict[str, dict[str, int]]:
    """Per-split, per-label counts of what will be written; they must equal the plan, or the raw table changed."""
    counts = {split: {} for split in SPLITS}
    for row in assigned.groupBy("split", "label").count().collect():
        counts[row["split"]][str(row["label"])] = row["count"]
    planned = {split: {} for split in SPLITS}
    for _, label, split, first, last in ranges:
        planned[split][str(label)] = last - first + 1
    if counts != planned:
        raise PipelineError("the raw table does not match its manifest's label counts: rerun ingest with --force")
    return {split: dict(sorted(c.items(), key=lambda kv: int(kv[0]))) for split, c in counts.items()}


def curated_manifest(cfg: PipelineConfig, fingerprint: str, raw_manifest: dict, label_counts: dict) -> dict:
    data = cfg.data
    return {"fingerprint": fingerprint, "counts": {s: sum(c.values()) for s, c in label_counts.items()},
            "label_counts": label_counts, "schema": CURATED_SCHEMA.jsonValue(), "normalisation": NORMALISATION,
            "seed": cfg.prepare.seed, "validation_size": cfg.prepare.validation_size,
            "subset_fraction": cfg.prepare.subset_fraction, "source_checksums": raw_manifest["source_checksums"],
            "raw_fingerprint": raw_manifest["fingerprint"], "config_hash": cfg.section_hash("data", "prepare"),
            "image_shape": list(IMAGE_SHAPE), "num_classes": NUM_CLASSES,
            "row_group_rows": data.row_group_rows}


def _result(manifest: dict, layout: Layout, skipped: bool) -> StageResult:
    return StageResult(skipped, {**{s: layout.curated(s) for s in SPLITS}, "manifest": layout.curated_manifest},
                       counts=manifest["counts"])
