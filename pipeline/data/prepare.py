"""Prepare stage: raw table -> normalised float32 images -> curated train / validation / test for Petastorm.

One pass over the raw table writes all three splits: each record's split comes from comparing its seeded key with
a few dozen boundary keys (pipeline.data.split), and Python workers normalise and write the Parquet files with
PyArrow, so the float arrays never go back through the JVM. Each split is published atomically and the manifest
last: a later stage trusts a split only when the manifest exists with the current fingerprint.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack
from functools import partial

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pyspark.sql.functions as F
from pyspark import TaskContext
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.pandas.types import to_arrow_schema

from pipeline import outputs, storage
from pipeline.config import PipelineConfig
from pipeline.data.split import RAW_CHANGED, plan_ranges, split_bounds, with_split
from pipeline.errors import PipelineError
from pipeline.fingerprint import fingerprint_of
from pipeline.layout import SPLITS, Layout
from pipeline.locks import output_lock
from pipeline.result import StageResult
from pipeline.schema import CURATED_SCHEMA, IMAGE_SHAPE, NORMALISATION, NUM_CLASSES, RAW_SCHEMA, normalised

log = logging.getLogger(__name__)

CURATED_ARROW_SCHEMA = to_arrow_schema(CURATED_SCHEMA)
WRITTEN_SCHEMA = "split string, label int, count long, file string"   # one row per file and label written


def run_prepare(spark: SparkSession, cfg: PipelineConfig, layout: Layout, force: bool = False) -> StageResult:
    """Write layout.curated(split) for every split and layout.curated_manifest; skip when already complete."""
    started = time.monotonic()
    raw_manifest = outputs.read_stage_output(layout.raw_manifest, "ingest")  # published last: the raw table is whole
    fingerprint = prepare_fingerprint(raw_manifest["fingerprint"], cfg.section_hash("data", "prepare"))
    with output_lock(layout.curated_root, "prepare"):
        if not force and outputs.is_complete(layout.curated_manifest, fingerprint):
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
    kept = (raw.transform(with_split, split_bounds(raw, ranges, cfg.prepare.seed), cfg.prepare.seed)
            .filter(F.col("split").isNotNull()))
    with ExitStack() as publishes:          # any failure removes every split's temporary folder
        folders = {split: publishes.enter_context(outputs.publishing(layout.curated(split))) for split in SPLITS}
        log.info("prepare: writing %s", ", ".join(SPLITS))
        written = write_splits(kept, folders, cfg.data.row_group_rows)
        label_counts = _label_counts(written, ranges)
    manifest = curated_manifest(cfg, fingerprint, raw_manifest, label_counts)
    storage.write_json(layout.curated_manifest, manifest)
    return manifest


def prepare_fingerprint(raw_fingerprint: str, config_hash: str) -> str:
    return fingerprint_of({"raw": raw_fingerprint, "config": config_hash})


def write_splits(kept: DataFrame, folders: dict[str, str], row_group_rows: int) -> list[dict]:
    """Normalise and write the records of each split into folders[split] in one pass: per task, one file per split
    with row groups of at most `row_group_rows` (Petastorm shards by row group). Returns what was written
    (WRITTEN_SCHEMA rows); files that a failed task attempt left behind are removed."""
    for folder in folders.values():
        storage.makedirs(folder)
    written = [row.asDict() for row in kept.select("record_id", "image", "label", "split")
               .mapInArrow(partial(_write_partition, folders, row_group_rows), WRITTEN_SCHEMA).collect()]
    for split, folder in folders.items():
        files = {w["file"] for w in written if w["split"] == split}
        storage.remove_files_except(folder, files)
        if not files:               # an empty split is still a readable Parquet data set
            _empty_file(folder)
    return written


def _write_partition(folders: dict[str, str], row_group_rows: int,
                     batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Executor side: one task's records, split by split, to `<folder>/part-<partition>-<attempt>.parquet`."""
    context = TaskContext.get()
    name = f"part-{context.partitionId():05d}-{context.attemptNumber()}.parquet"
    writers: dict[str, pq.ParquetWriter] = {}
    counts: dict[tuple[str, int], int] = {}
    try:
        for batch in batches:
            splits = batch.column("split")
            for split in pc.unique(splits).to_pylist():
                part = batch.filter(pc.equal(splits, split))
                if split not in writers:
                    writers[split] = _writer(f"{folders[split]}/{name}")
                writers[split].write_batch(_curated_batch(part), row_group_size=row_group_rows)
                for entry in pc.value_counts(part.column("label")).to_pylist():
                    counts[split, entry["values"]] = counts.get((split, entry["values"]), 0) + entry["counts"]
    finally:
        for writer in writers.values():
            writer.close()
    yield pa.RecordBatch.from_pylist(
        [{"split": split, "label": label, "count": n, "file": f"{folders[split]}/{name}"}
         for (split, label), n in sorted(counts.items())],
        schema=pa.schema([("split", pa.string()), ("label", pa.int32()), ("count", pa.int64()),
                          ("file", pa.string())]))


def _curated_batch(records: pa.RecordBatch) -> pa.RecordBatch:
    """Raw (record_id, image bytes, label) -> the curated schema: float32 pixels in [0, 1] (NORMALISATION)."""
    image = normalised(records.column("image")).cast(CURATED_ARROW_SCHEMA.field("image").type)
    return pa.RecordBatch.from_arrays([records.column("record_id"), image, records.column("label")],
                                      schema=CURATED_ARROW_SCHEMA)


def _writer(path: str) -> pq.ParquetWriter:
    fs, p = storage.filesystem(path)
    return pq.ParquetWriter(p, CURATED_ARROW_SCHEMA, filesystem=fs, compression="snappy")


def _empty_file(folder: str) -> None:
    _writer(f"{folder}/part-empty.parquet").close()


def _label_counts(written: list[dict], ranges: list[tuple]) -> dict[str, dict[str, int]]:
    """Per-split, per-label counts of what was written; they must equal the plan, or the raw table changed."""
    counts = {split: {} for split in SPLITS}
    for w in written:
        counts[w["split"]][str(w["label"])] = counts[w["split"]].get(str(w["label"]), 0) + w["count"]
    planned = {split: {} for split in SPLITS}
    for _, label, split, first, last in ranges:
        planned[split][str(label)] = last - first + 1
    if counts != planned:
        raise PipelineError(RAW_CHANGED)
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
