"""Ingest stage: source files -> structural checks -> record checks and suspect-image policies -> raw Parquet,
quarantine and reports.

One pass over the images: the worker that parses a range of records checks them, hashes each image and writes
the usable ones into the raw table's temporary folder with PyArrow, and hands Spark only the slim columns (ids,
label, reason, hash). The counts, the duplicates, the suspect-image policies and the quarantine are computed from
those; the few records a policy removes are then taken out of the files they were written to.

Nothing is written until the structural checks pass; the raw table is published only when the checks let it be,
and its manifest last, so a failed run leaves nothing a later stage would read (prepare requires the manifest).
"""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from functools import partial

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pyspark.sql.functions as F
from pyspark import StorageLevel, TaskContext
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import BinaryType, BooleanType, StructField, StructType

from pipeline import outputs, record_checks, storage
from pipeline.config import PipelineConfig
from pipeline.data import source_checks
from pipeline.errors import PipelineError
from pipeline.fingerprint import fingerprint_of
from pipeline.formats import readers
from pipeline.formats.records import PARSED_SCHEMA
from pipeline.layout import Layout, ingest_hash
from pipeline.locks import output_lock
from pipeline.result import StageResult
from pipeline.schema import IMAGE_SHAPE, NUM_CLASSES, QUARANTINE_SCHEMA, RAW_SCHEMA

log = logging.getLogger(__name__)

# Bumped when the record checks change, so that raw tables published under older checks are redone.
RECORD_CHECKS_VERSION = 2
IMAGE_ENCODING = "binary: height*width unsigned bytes (0-255), row-major, row 0 first, exactly as in IDX files"

RAW_ARROW_SCHEMA = to_arrow_schema(RAW_SCHEMA)
# What each parsed record leaves in Spark: everything but the pixels, plus the checks that needed them and the
# raw-table file it was written to (null when the record checks rejected it, so it was not written).
SLIM_PARSED_COLUMNS = [name for name in PARSED_SCHEMA.fieldNames() if name != "image"]
CHECKED_SCHEMA = StructType([*(PARSED_SCHEMA[name] for name in SLIM_PARSED_COLUMNS),
                             StructField("image_hash", BinaryType(), nullable=True),
                             StructField("blank", BooleanType(), nullable=False),
                             StructField("file", RAW_SCHEMA["record_id"].dataType, nullable=True)])


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
    with outputs.publishing(layout.raw) as staged:      # removed unless the checks let the raw table be published
        storage.makedirs(staged)
        checked = (readers.task_frame(spark, tasks)
                   .mapInArrow(partial(_write_usable_records, staged, data.row_group_rows), CHECKED_SCHEMA)
                   .persist(StorageLevel.MEMORY_AND_DISK))
        try:
            report = _validate(checked, cfg, layout, source_checks.split_files(fmt, sources), staged)
        finally:
            checked.unpersist()
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


def _validate(checked: DataFrame, cfg: PipelineConfig, layout: Layout, files: dict[str, str], staged: str) -> dict:
    """Count, report, write the quarantine; then either fail (naming why) or leave in `staged` exactly the records
    the raw table publishes."""
    copies = record_checks.image_copies(checked).persist(StorageLevel.MEMORY_AND_DISK)   # one small row per image
    try:
        checked = checked.transform(record_checks.with_policies, copies, cfg.data.blank_images,
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
        _remove_unpublished(checked, staged, cfg.data.row_group_rows)
        written = sum(sum(groups) for _, groups in storage.parquet_files(staged))
        if written != sum(report["valid"].values()):
            raise PipelineError(f"{layout.input_dir}: ingest wrote {written} records to the raw table but its checks "
                                f"passed {sum(report['valid'].values())}; nothing was published: rerun ingest")
    finally:
        copies.unpersist()
    return report


def _write_usable_records(folder: str, row_group_rows: int,
                          batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Executor side: parse this partition's records, write those that pass the record checks to
    `<folder>/part-<partition>-<attempt>.parquet` (row groups of `row_group_rows`), and yield every record
    without its pixels (CHECKED_SCHEMA)."""
    context = TaskContext.get()
    name = f"part-{context.partitionId():05d}-{context.attemptNumber()}.parquet"
    fs, path = storage.filesystem(f"{folder.rstrip('/')}/{name}")
    # Written under a hidden name of its own, moved when whole: a file under its part name is one that a task
    # finished (a lost partition is recomputed under the same attempt number, maybe while the lost one still writes).
    writing = f"{path.rsplit('/', 1)[0]}/.{name}.{uuid.uuid4().hex[:8]}"
    with pq.ParquetWriter(writing, RAW_ARROW_SCHEMA, filesystem=fs, compression="snappy") as writer:
        for parsed in readers.parse_batches(batches):
            usable = pc.is_null(parsed.column("reason"))
            writer.write_batch(pa.RecordBatch.from_arrays(
                [parsed.column(c) for c in RAW_ARROW_SCHEMA.names], schema=RAW_ARROW_SCHEMA).filter(usable),
                row_group_size=row_group_rows)
            image_hash, blank = record_checks.image_checks(parsed)
            file = pc.if_else(usable, pa.scalar(name), pa.scalar(None, pa.string()))
            yield pa.RecordBatch.from_arrays(
                [*(parsed.column(c) for c in SLIM_PARSED_COLUMNS), image_hash, blank, file],
                names=CHECKED_SCHEMA.fieldNames())
    fs.move(writing, path)


def _remove_unpublished(checked: DataFrame, staged: str, row_group_rows: int) -> None:
    """Leave in `staged` only the files of the attempts Spark kept, without the records a suspect-image policy
    quarantined or dropped after they were written (rare: each file that holds one is rewritten)."""
    removed = F.col("reason").isNotNull() | F.col("dropped")
    files = (checked.filter(F.col("file").isNotNull()).groupBy("file")
             .agg(F.collect_list(F.when(removed, F.col("source_index"))).alias("removed")).collect())
    storage.remove_files_except(staged, {f["file"] for f in files})
    rewrites = [(f"{staged}/{f['file']}", f["removed"]) for f in files if f["removed"]]
    if rewrites:
        log.info("ingest: taking %d records a policy removed out of %d raw files",
                 sum(len(indexes) for _, indexes in rewrites), len(rewrites))
        spark = checked.sparkSession
        spark.sparkContext.parallelize(rewrites, len(rewrites)).foreach(
            partial(_rewrite_without, row_group_rows=row_group_rows))


def _rewrite_without(item: tuple[str, list[int]], row_group_rows: int) -> None:
    """Executor side: rewrite one raw file without the records at the given source indexes."""
    path, indexes = item
    fs, p = storage.filesystem(path)
    table = pq.read_table(p, filesystem=fs, schema=RAW_ARROW_SCHEMA)
    kept = table.filter(pc.invert(pc.is_in(table.column("source_index"), value_set=pa.array(indexes, pa.int64()))))
    folder, name = p.rsplit("/", 1)
    pq.write_table(kept, f"{folder}/.{name}", filesystem=fs, row_group_size=row_group_rows, compression="snappy")
    fs.move(f"{folder}/.{name}", p)


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
