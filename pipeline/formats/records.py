"""Parsed records: NumPy arrays to Arrow record batches of the parsed-records schema (executor side), and the
reason a parsed record cannot be used.

Readers hand over pixels as uint8 rows (IDX, uint8 npz) or as numbers to check (CSV, other npz dtypes); values
that cannot be a pixel or a label are not fixed up here: the record keeps a `problem`, and `reject_reason` turns
it (or a bad label or image) into the reason ingest quarantines the record for and predict refuses it for.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyspark.sql.functions as F
from pyspark.sql import Column, DataFrame
from pyspark.sql.types import StringType, StructField, StructType

from pipeline.schema import RAW_SCHEMA

# The raw table's columns plus what a reader found wrong with the record (null when nothing).
PARSED_SCHEMA = StructType([*RAW_SCHEMA.fields, StructField("problem", StringType(), nullable=True)])

MISSING = "missing value"
PIXEL_RANGE = "pixel value out of range (not an integer 0-255)"
LABEL_NOT_INT = "label is not an integer"


def checked_numbers(pixels: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """uint8 pixels, int labels, a label-null mask and a problem per record (None when fine), all vectorised."""
    pixels = pixels.astype(np.float64, copy=False)
    labels = labels.astype(np.float64, copy=False)
    missing = np.isnan(pixels).any(axis=1) | np.isnan(labels)
    bad_pixel = ((pixels < 0) | (pixels > 255) | (pixels != np.floor(pixels))).any(axis=1) & ~missing
    label_ok = np.isfinite(labels) & (labels == np.floor(labels)) & (np.abs(labels) < 2 ** 31)
    bad_label = ~label_ok & ~np.isnan(labels)
    problems = np.full(len(labels), None, dtype=object)
    problems[bad_pixel] = PIXEL_RANGE
    problems[bad_label] = LABEL_NOT_INT
    problems[missing] = MISSING
    images = np.nan_to_num(np.clip(pixels, 0, 255)).astype(np.uint8)
    return images, np.where(label_ok, labels, 0).astype(np.int64), ~label_ok, problems.tolist()


def record_batch(name: str, split: str, start: int, images: np.ndarray, labels: np.ndarray,
                 label_null: np.ndarray | None = None, problems: list | None = None) -> pa.RecordBatch:
    """One Arrow batch of parsed records; `images` is (n, pixels) uint8, passed to Arrow without a per-row copy."""
    n = len(labels)
    images = np.ascontiguousarray(images, dtype=np.uint8).reshape(n, -1)
    offsets = np.arange(n + 1, dtype=np.int32) * images.shape[1]
    image = pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(images)])
    index = np.arange(start, start + n, dtype=np.int64)
    return pa.RecordBatch.from_arrays([
        pa.array([f"{name}:{i}" for i in range(start, start + n)], pa.string()),
        pa.array(np.full(n, split, dtype=object), pa.string()),
        pa.array(index, pa.int64()),
        image,
        pa.array(labels.astype(np.int32), pa.int32(), mask=label_null),
        pa.array(problems if problems is not None else [None] * n, pa.string()),
    ], names=PARSED_SCHEMA.fieldNames())


def reject_reason(num_classes: int, image_bytes: int) -> Column:
    """The first reason a record is unusable, or null: what the reader found, then label and image checks."""
    return F.coalesce(
        F.col("problem"),
        F.when(F.col("label").isNull(), F.lit("missing label")),
        F.when(~F.col("label").between(0, num_classes - 1), F.lit(f"label outside 0-{num_classes - 1}")),
        F.when(F.col("image").isNull(), F.lit("missing image")),
        F.when(F.length("image") != image_bytes, F.lit(f"image is not {image_bytes} bytes")),
    )


def with_reject_reason(df: DataFrame, num_classes: int, image_bytes: int) -> DataFrame:
    return df.withColumn("reason", reject_reason(num_classes, image_bytes))
