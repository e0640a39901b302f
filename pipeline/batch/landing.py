"""One day's arrivals, read from its landing folder into records judged one by one: (record_id, source_file,
image or null, reason or null), the reason saying why the record cannot be scored.

The folder holds either image files (PNG, JPEG and the other formats predict reads, listed and decoded on the
executors exactly as predict does it: pipeline.formats.image_files and .images) or one raw file as ingest reads
it (IDX images with their labels file beside them, a Keras .npz or an MNIST CSV, through pipeline.formats.readers
and the same record checks). labels.csv (layout.LABELS_FILE) is for retraining and is not read here. A file that
is not what it claims to be in a raw batch stops the day (one line naming the folder and the file); in an image
batch, each bad file is one quarantined record, so one scanner glitch does not hold up a day's scoring.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyspark.sql.functions as F
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

from pipeline import storage
from pipeline.config import PipelineConfig
from pipeline.errors import PipelineError
from pipeline.formats import readers
from pipeline.formats.image_files import FolderListing, list_folder
from pipeline.formats.images import IMAGE_EXTENSIONS, IMAGE_FORMATS, decode_image_files
from pipeline.layout import LABELS_FILE, BatchFiles
from pipeline.schema import normalised
from pipeline.scoring import set_arrow_batch_rows

log = logging.getLogger(__name__)

ARRIVALS_SCHEMA = StructType([
    StructField("record_id", StringType(), nullable=False),
    StructField("source_file", StringType(), nullable=False),   # relative to the day's landing folder
    StructField("image", ArrayType(FloatType(), containsNull=False), nullable=True),
    StructField("reason", StringType(), nullable=True),
])
NOT_AN_IMAGE = f"not an image file (expected {', '.join(IMAGE_FORMATS)})"


@dataclass(frozen=True)
class Arrivals:
    kind: str                      # images | idx | npz | csv
    records: DataFrame             # ARRIVALS_SCHEMA
    # A small day (batch.driver_max_images) is decoded and scored in the driver: a Python worker's start and its
    # imports cost more than the work (pipeline.python_batches).
    in_driver: bool
    cached: DataFrame | None = None  # decoded images held in memory, until release()

    def release(self) -> None:
        if self.cached is not None:
            self.cached.unpersist()


def read_landing(spark: SparkSession, cfg: PipelineConfig, files: BatchFiles) -> Arrivals:
    """The day's arrivals; a missing or empty landing folder is one line naming it."""
    folder = files.landing
    if not storage.is_dir(folder):
        raise PipelineError(f"{folder}: no landing folder for {files.ds} (nothing arrived that day, or the landing "
                            f"path paths.landing is wrong)")
    listing = list_folder(folder)
    names = [listing.relative(path) for path, _ in listing.files if listing.relative(path) != LABELS_FILE]
    if not names and not listing.refused:
        raise PipelineError(f"{folder}: the landing folder is empty (no image files, no IDX, CSV or npz file)")
    if names and not any(name.lower().endswith(IMAGE_EXTENSIONS) for name in names):
        return read_raw_file(spark, cfg, folder, names)
    return read_image_files(spark, cfg, listing)


def read_image_files(spark: SparkSession, cfg: PipelineConfig, listing: FolderListing) -> Arrivals:
    """Every visible file but labels.csv is a record: decoded as predict decodes images, or quarantined with the
    reason (unreadable, too large, a link leading outside, not an image at all)."""
    for link, same in listing.duplicates:
        log.info("%s is a link to %s: that file is scored once, under its own name", link, same)
    images = [(path, real) for path, real in listing.files if path.lower().endswith(IMAGE_EXTENSIONS)]
    others = [(path, NOT_AN_IMAGE) for path, _ in listing.files
              if not path.lower().endswith(IMAGE_EXTENSIONS) and listing.relative(path) != LABELS_FILE]
    in_driver = _small_day(cfg, len(images) + len(others) + len(listing.refused))
    set_arrow_batch_rows(spark, cfg.batch.image_decode_batch_size)
    decoded = decode_image_files(spark, images, cfg.predict.max_image_pixels, in_driver=in_driver).cache()
    refused = spark.createDataFrame(listing.refused + others, "path string, error string").withColumn(
        "image", F.lit(None).cast(ARRIVALS_SCHEMA["image"].dataType))
    relative = F.substring(F.col("path"), len(listing.prefix) + 1, 1 << 30)
    arrivals = (decoded.unionByName(refused)
                .select(relative.alias("record_id"), relative.alias("source_file"), "image",
                        F.col("error").alias("reason")))
    return Arrivals("images", arrivals, in_driver, decoded)


def read_raw_file(spark: SparkSession, cfg: PipelineConfig, folder: str, names: list[str]) -> Arrivals:
    """One IDX (images with their labels file), npz or CSV file, read and checked as ingest reads and checks
    it; its structural problems stop the day in one line naming the folder and the file."""
    base = folder.rstrip("/")
    images = [n for n in names if not _is_idx_labels(n, names)]
    if len(images) != 1:
        raise PipelineError(f"{folder}: expected image files or one IDX, CSV or npz file, found {len(names)} "
                            f"files: {', '.join(sorted(names)[:5])}")
    try:
        fmt, sources = readers.sources_at(f"{base}/{images[0]}", cfg.data)
        scans = readers.scan_sources(spark, fmt, sources, cfg.data)
        counts, tasks = readers.plan_tasks(fmt, sources, scans, cfg.data)
    except PipelineError as exc:
        raise PipelineError(f"{folder}: {exc}") from None
    log.info("%s file %s: %s records", fmt, images[0], sum(counts.values()))
    parsed = readers.read_records(spark, tasks)
    checked = (parsed.select("record_id", F.lit(images[0]).alias("source_file"), "image", "reason")
               .mapInArrow(_normalised_batches, ARRIVALS_SCHEMA)
               .withColumn("image", F.when(F.col("reason").isNull(), F.col("image"))))
    return Arrivals(fmt, checked, _small_day(cfg, sum(counts.values())))


def _small_day(cfg: PipelineConfig, records: int) -> bool:
    return records <= cfg.batch.driver_max_images


def _is_idx_labels(name: str, names: list[str]) -> bool:
    """An IDX labels file whose images file arrived beside it (readers.sources_at pairs them by name)."""
    return any(other != name and other.replace("images", "labels").replace("idx3", "idx1") == name
               for other in names)


def _normalised_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Raw uint8 pixels to curated floats (schema.normalised: the normalisation prepare applies); rows that failed
    the record checks get whatever their bytes give, and are blanked by the caller."""
    for batch in batches:
        yield pa.RecordBatch.from_arrays(
            [batch.column("record_id"), batch.column("source_file"), normalised(batch.column("image")),
             batch.column("reason")], names=ARRIVALS_SCHEMA.fieldNames())
