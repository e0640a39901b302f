"""What prediction reads. Kinds: the curated test set (default), Parquet of the curated schema, a folder (or file) of
ordinary images, and the raw formats the ingest stage reads (IDX, npz, CSV).

Raw formats become one DataFrame of (record_id, image = IMAGE_PIXELS floats in [0, 1], label?), through the ingest
stage's readers (pipeline.formats) and the normalisation recorded in schema.NORMALISATION. Image files and Parquet
are listed here and read where they are scored, in the Python workers: image files by name, Parquet by row group.
Their pixels never pass through the JVM, which for Parquet halved the stage's time (benchmarks/README.md, row 4).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import pyspark.sql.functions as F
from pyspark.sql import DataFrame, SparkSession

from pipeline import outputs, storage
from pipeline.config import PipelineConfig
from pipeline.errors import PipelineError
from pipeline.formats import readers
from pipeline.formats.image_files import FolderListing, list_folder
from pipeline.formats.images import IMAGE_EXTENSIONS
from pipeline.layout import Layout
from pipeline.paths import absolute
from pipeline.schema import IMAGE_PIXELS, IMAGE_SHAPE, NORMALISATION, normalise_images
from pipeline.scoring import ParquetImages, curated_parquet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictionInput:
    kind: str        # curated | parquet | images | raw
    path: str
    name: str        # the output folder's name under layout.predictions
    id_column: str   # record_id, or path for image files


def resolve_input(layout: Layout, input_path: str | None) -> PredictionInput:
    """Classify `input_path` (default: the curated test set) by what it holds."""
    if input_path is None:
        return PredictionInput("curated", layout.curated("test"), "test", "record_id")
    path = absolute(input_path)
    if not storage.exists(path):
        raise PipelineError(f"input {input_path} does not exist")
    name = os.path.basename(path).split(".")[0] or "input"
    files = [path] if not storage.is_dir(path) else _list_files(path)
    if any(f.lower().endswith(".parquet") for f in files):
        return PredictionInput("parquet", path, name, "record_id")
    if any(f.lower().endswith(IMAGE_EXTENSIONS) for f in files):
        return PredictionInput("images", path, name, "path")
    return PredictionInput("raw", path, name, "record_id")


def _list_files(folder: str) -> list[str]:
    """Visible files under `folder` (Spark's convention: names starting with '.' or '_' are hidden), each real file
    once and none from outside the folder."""
    return [path for path, _ in list_folder(folder).files]


@dataclass(frozen=True)
class LoadedInput:
    images: DataFrame | None         # records: the id column, `image` and maybe `label`; None for files
    notes: dict                      # for the manifest
    files: DataFrame | None = None   # image files: (path, source) of each one to read, decode and score
    refused: DataFrame | None = None  # image files refused while listing: (path, reason)
    parquet: ParquetImages | None = None  # Parquet of the curated schema, read where it is scored


def load_input(spark: SparkSession, cfg: PipelineConfig, layout: Layout, source: PredictionInput) -> LoadedInput:
    """The input as a DataFrame of images, and for image files, the ones that cannot be scored."""
    if source.kind in ("curated", "parquet"):
        outputs.require_stage_output(source.path, "prepare", otherwise="pass --input")
        return LoadedInput(None, {}, parquet=curated_parquet(source.path))
    if source.kind == "images":
        return list_image_files(spark, source.path)
    return LoadedInput(read_raw_records(spark, cfg, layout, source.path), {})


def check_image_arrays(df: DataFrame, path: str) -> None:
    """Raise, naming the file and record of the first row whose `image` is not IMAGE_PIXELS values in [0, 1], and
    how many there are: one aggregate pass, and on a bad row a second query for the file and record holding it.
    Run after a worker found a bad row (scoring.BadImageArrays), to tell the whole input's story."""
    if "record_id" not in df.columns:  # scoring's ids for such files: '<file>:<row in the file>'
        df = df.withColumn("record_id", F.concat_ws(":", "_metadata.file_path", "_metadata.row_index"))
    bad_shape = F.coalesce(F.size("image"), F.lit(-1)) != IMAGE_PIXELS
    bad_range = (F.array_min("image") < 0) | (F.array_max("image") > 1)
    counts = df.agg(F.sum(bad_shape.cast("int")).alias("shape"), F.sum(bad_range.cast("int")).alias("range")).first()
    for problem, condition, count in (("shape", bad_shape, counts["shape"]), ("range", bad_range, counts["range"])):
        if count:
            row = (df.filter(condition).select(F.input_file_name().alias("file"), "record_id",
                                                F.size("image").alias("n")).first())
            shape = "x".join(map(str, IMAGE_SHAPE))
            detail = (f"image arrays must hold {IMAGE_PIXELS} values ({shape}), found {row['n']}" if problem == "shape"
                      else "image values must lie in [0, 1] (the curated, normalised schema)")
            raise PipelineError(f"{row['file']}: {detail} in record {row['record_id']} "
                                f"({count} bad row{'s' if count > 1 else ''})")


def list_image_files(spark: SparkSession, path: str) -> LoadedInput:
    """The image files to score, listed on the driver (only paths): they are read, decoded and scored together on
    the executors (pipeline.scoring.score_image_files)."""
    listing = list_folder(path, IMAGE_EXTENSIONS) if storage.is_dir(path) else FolderListing(files=[(path, path)])
    for link, same in listing.duplicates:
        log.info("%s is a link to %s: that file is scored once, under its own name", link, same)
    # A local relation: Spark spreads its rows over one task per core (no Python RDD in between).
    files = spark.createDataFrame(listing.files, "path string, source string")
    refused = spark.createDataFrame(listing.refused, "path string, reason string")
    return LoadedInput(None, {"duplicate_links_skipped": len(listing.duplicates)}, files, refused)


def require_readable_images(images: DataFrame, path: str) -> None:
    if images.limit(1).count() == 0:
        raise PipelineError(f"no readable image file in {path} (looked for {', '.join(IMAGE_EXTENSIONS)})")


def read_raw_records(spark: SparkSession, cfg: PipelineConfig, layout: Layout, path: str) -> DataFrame:
    """IDX, npz or CSV through the shared readers and record checks, then schema.normalise_images."""
    check_normalisation(layout)
    fmt, sources = readers.sources_at(path, cfg.data)
    scans = readers.scan_sources(spark, fmt, sources, cfg.data)
    counts, tasks = readers.plan_tasks(fmt, sources, scans, cfg.data)
    log.info("%s input %s: %s records", fmt, path, ", ".join(f"{s} {n}" for s, n in counts.items()))
    parsed = readers.read_records(spark, tasks)
    rejected = parsed.filter(F.col("reason").isNotNull())
    first = rejected.select("record_id", "reason").first()
    if first is not None:
        raise PipelineError(f"{path}: {rejected.count()} record(s) cannot be scored; the first, "
                            f"{first['record_id']}: {first['reason']}")
    # No record was rejected; the data stage's suspect-image policies are for training data, not for scoring.
    return parsed.select("record_id", "image", "label").transform(normalise_images)


def check_normalisation(layout: Layout) -> None:
    """Models were trained on images normalised as the curated manifest records: refuse to score otherwise."""
    if not storage.exists(layout.curated_manifest):
        return  # no curated data in this layout: prepare's NORMALISATION is the one the code knows
    recorded = storage.read_json(layout.curated_manifest).get("normalisation")
    if recorded is not None and recorded != NORMALISATION:
        raise PipelineError(f"{layout.curated_manifest} records normalisation {recorded}, but this code applies "
                            f"{NORMALISATION}: re-run prepare and training, or score curated Parquet")
