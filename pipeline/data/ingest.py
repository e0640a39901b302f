"""Ingest stage: source files -> structural checks -> record checks and suspect-image policies -> raw Parquet,
quarantine and reports.

Nothing is written until the structural checks pass; the raw table and its manifest are published last, so a
failed run leaves nothing a later stage would read (prepare requires the manifest).
"""
from __future__ import annotations

import logging
import time

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession

from pipeline import outputs, record_checks, storage
from pipeline.config import PipelineConfig
from pipeline.data import source_checks
from pipeline.errors import PipelineError
from pipeline.fingerprint import fingerprint_of
from pipeline.formats import readers
from pipeline.layout import Layout, ingest_hash
from pipeline.locks import output_lock
from pipeline.result import StageResult
from pipeline.schema import IMAGE_PIXELS, IMAGE_SHAPE, NUM_CLASSES, QUARANTINE_SCHEMA, RAW_SCHEMA

log = logging.getLogger(__name__)

# Bumped when the record checks change, so that raw tables published under older checks are redone.
RECORD_CHECKS_VERSION = 2
IMAGE_ENCODING = "binary: height*width unsigned bytes (0-255), row-major, row 0 first, exactly as in IDX files"


def run_ingest(spark: SparkSession, cfg: PipelineConfig, layout: Layout, force: bool = False) -> StageResult:
    """Read the input files into layout.raw (+ quarantine, validation report, manifest); skip when complete."""
    with output_lock(layout.raw_root, "ingest"):  # from the skip check to the manifest: one writer at a time
        return _ingest_locked(spark, cfg, layout, force)


def _ingest_locked(spark: SparkSession, cfg: PipelineConfig, layout: Layout, force: bool) -> StageResult:
    started = time.monotonic()
    data = cfg.data
    fmt, sources = readers.discover_sources(layout.input_dir, data)
    scans = readers.scan_sources(spark, fmt, sources, data)
    names = readers.list_input(layout.input_dir)
    verified = source_checks.verify_checksums(layout.input_dir, names, data, sources, scans)
    checksums = {s.name: scanned["sha256"] for s, scanned in zip(sources, scans, strict=True)}
    fingerprint = ingest_fingerprint(cfg, checksums)
    if not force and outputs.is_complete(layout.raw_manifest, fingerprint):
        log.info("ingest: skipped, %s is already complete for these inputs and config (--force redoes it)",
                 layout.raw)
        return _result(storage.read_json(layout.raw_manifest), layout, skipped=True)
    storage.remove(layout.raw_manifest)     # from here on, later stages see no raw table until this run completes
    counts, tasks = readers.plan_tasks(fmt, sources, scans, data)
    source_checks.require_records(fmt, sources, counts)
    log.info("ingest: %s input %s, %s records in %d parse tasks", fmt, layout.input_dir,
             ", ".join(f"{s} {n}" for s, n in counts.items()), len(tasks))
    parsed = (readers.read_records(spark, tasks)
              .transform(record_checks.with_record_checks, NUM_CLASSES, IMAGE_PIXELS)
              .persist(StorageLevel.MEMORY_AND_DISK))
    try:
        report = _validate_and_publish(parsed, cfg, layout, source_checks.split_files(fmt, sources))
    finally:
        parsed.unpersist()
    sources_info = [{"name": s.name, "split": s.split, "role": s.role, "path": s.path, "bytes": scanned["bytes"],
                     "sha256": scanned["sha256"]} for s, scanned in zip(sources, scans, strict=True)]
    manifest = {"fingerprint": fingerprint, "config_hash": ingest_hash(cfg), "input": layout.input_dir,
                "format": fmt, "sources": sources_info, "source_checksums": checksums, "checksums_verified": verified,
                "source_records": counts, "counts": report["valid"], "quarantined": report["quarantined"],
                "label_counts": report["label_counts"], "duplicate_images": report["duplicate_images"],
                "image_shape": list(IMAGE_SHAPE), "image_encoding": IMAGE_ENCODING,
                "num_classes": NUM_CLASSES, "row_group_rows": data.row_group_rows,
                "schema": RAW_SCHEMA.jsonValue()}
    storage.write_json(layout.raw_manifest, manifest)
    log.info("ingest: wrote %s in %.1fs", layout.raw, time.monotonic() - started)
    return _result(manifest, layout, skipped=False)


def ingest_fingerprint(cfg: PipelineConfig, checksums: dict[str, str]) -> str:
    """Identity of the raw table: the data config, the input location and the exact bytes of every source."""
    return fingerprint_of({"config": ingest_hash(cfg), "checksums": checksums, "checks": RECORD_CHECKS_VERSION})


def _validate_and_publish(parsed: DataFrame, cfg: PipelineConfig, layout: Layout, files: dict[str, str]) -> dict:
    """Count, report, write the quarantine; then either fail (naming why) or publish the raw table."""
    copies = record_checks.image_copies(parsed).persist(StorageLevel.MEMORY_AND_DISK)   # one small row per image
    try:
        checked = parsed.transform(record_checks.with_policies, copies, cfg.data.blank_images,
                                   cfg.data.test_images_in_train)
        report = record_checks.build_report(record_checks.record_counts(checked),
                                            record_checks.duplicate_counts(copies), cfg.data, files)
        for line in record_checks.summary_lines(report):
            log.info(line)
        for line in record_checks.warning_lines(report):
            log.warning(line)
        # The quarantine and the report are written even when ingest fails: they are what a user inspects.
        outputs.write_parquet(_quarantine(checked, report), layout.quarantine, cfg.data.row_group_rows)
        storage.write_json(layout.validation_report, report)
        if report["error"]:
            storage.remove(layout.raw)
            raise PipelineError(f"{report['error']}; see {layout.validation_report}")
        outputs.write_parquet(record_checks.valid_records(checked), layout.raw, cfg.data.row_group_rows)
    finally:
        copies.unpersist()
    return report


def _quarantine(checked: DataFrame, report: dict) -> DataFrame:
    """The quarantined records; when the counts say there are none, an empty table without a pass over the images."""
    if any(report["quarantined"].values()):
        return record_checks.quarantined_records(checked)
    return checked.sparkSession.createDataFrame([], QUARANTINE_SCHEMA)


def _result(manifest: dict, layout: Layout, skipped: bool) -> StageResult:
    return StageResult(skipped, {"raw": layout.raw, "quarantine": layout.quarantine,
                                 "validation_report": layout.validation_report},
                       counts=manifest["counts"],
                       details={"format": manifest["format"], "checksums_verified": manifest["checksums_verified"],
                                "quarantined": manifest["quarantined"]})
