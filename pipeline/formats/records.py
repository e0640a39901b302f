"""Parsed records: NumPy arrays to Arrow record batches of the parsed-records schema (executor side), each with
the reason the record cannot be used.

Readers hand over pixels as uint8 rows (IDX, uint8 npz) or as numbers to check (CSV, other npz dtypes); values
that cannot be a pixel or a label are not fixed up here: the record keeps its `reason` (what the reader found, or
a bad label), the reason ingest quarantines it for and predict refuses it for. It is decided here, in the worker
that parsed the record, so a stage can act on it before the pixels leave that worker.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
from pyspark.sql.types import StringType, StructField, StructType

from pipeline.schema import IMAGE_PIXELS, NUM_CLASSES, RAW_SCHEMA

# The raw table's columns plus why the record cannot be used (null when it can).
PARSED_SCHEMA = StructType([*RAW_SCHEMA.fields, StructField("reason", StringType(), nullable=True)])

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
    label_null = np.zeros(n, dtype=bool) if label_null is None else np.asarray(label_null, dtype=bool)
    reasons = reject_reasons(labels, label_null, problems if problems is not None else [None] * n, images.shape[1])
    return pa.RecordBatch.from_arrays([
        pa.array([f"{name}:{i}" for i in range(start, start + n)], pa.string()),
        pa.array(np.full(n, split, dtype=object), pa.string()),
        pa.array(index, pa.int64()),
        image,
        pa.array(labels.astype(np.int32), pa.int32(), mask=label_null),
        pa.array(reasons, pa.string()),
    ], names=PARSED_SCHEMA.fieldNames())


def reject_reasons(labels: np.ndarray, label_null: np.ndarray, problems: list, image_bytes: int,
                   num_classes: int = NUM_CLASSES, expected_bytes: int = IMAGE_PIXELS) -> list:
    """The first reason each record is unusable, or None: what the reader found, then the label, then the image's
    size (every image of a batch has `image_bytes`)."""
    checks = [(label_null, "missing label"),
              (~label_null & ((labels < 0) | (labels > num_classes - 1)), f"label outside 0-{num_classes - 1}"),
              (np.full(len(labels), image_bytes != expected_bytes), f"image is not {expected_bytes} bytes")]
    reasons = list(problems)
    for hits, reason in checks:
        for i in np.flatnonzero(hits):
            reasons[i] = reasons[i] or reason
    return reasons
