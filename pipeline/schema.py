"""The data sets' schemas, declared once. Every reader, writer and test derives its columns from here.

The image shape and the class count are the data's and the models' alike (ingest checks the sources against them,
the models are built for them, the scorer and the figures reshape by them): declared here, not configured.

Raw table (one row per source record, written by ingest):
  record_id     string   "<source file>:<index>", stable across reruns and partitionings
  source_split  string   "train" or "test": the split of origin in the source files
  source_index  long     position of the record in its source file
  image         binary   IMAGE_PIXELS bytes, uint8, row-major (row 0 first), exactly as in IDX files
  label         int      0..NUM_CLASSES-1

Curated tables (train / validation / test, written by prepare, read by Petastorm's make_batch_reader):
  record_id     string
  image         array<float>  IMAGE_PIXELS values in [0, 1], row-major; reshape to IMAGE_SHAPE
  label         int      class index; training one-hot encodes it on the fly (categorical cross-entropy)

Quarantine table (records that failed record checks, written by ingest):
  record_id, source_split, source_index, label (may be null), reason

Batch tables (scheduled scoring, one ds=YYYY-MM-DD partition folder per day; see layout.BatchFiles):
  images        record_id (the image file's path relative to the day's landing folder, or "<file>:<index>" for
                records of an IDX/CSV/npz file), source_file (that file, relative to the landing folder), image
                (curated: IMAGE_PIXELS floats)
  quarantine    record_id, source_file, reason: the day's records that failed the record checks (unreadable or
                refused files, malformed records, blank images under data.blank_images=quarantine)
  predictions   record_id, source_file, prediction, confidence (the top probability), probabilities,
                model_name (the registered model), model_version (the registry version that scored the day)
The ds column is the partition folder's: read the day folders through BatchFiles.published(table), with option
basePath=BatchFiles.table(table), to get it.

Retraining training set (written by jobs/retrain.py, read by Petastorm like a curated train split, which reads
only image and label):
  record_id, image, label (curated), origin  string  ORIGIN_MNIST for the original training images, else the
                                                     date (ds) of the labelled batch the image came with

Raw images become curated ones by NORMALISATION, implemented once here (normalise_images): prepare applies it to
the raw table, predict to raw-format input.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    FloatType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

IMAGE_HEIGHT = 28
IMAGE_WIDTH = 28
IMAGE_SHAPE = (IMAGE_HEIGHT, IMAGE_WIDTH, 1)   # one channel: grey levels
IMAGE_PIXELS = IMAGE_HEIGHT * IMAGE_WIDTH
NUM_CLASSES = 10                               # the digits 0-9; IDX labels are single bytes

RAW_SCHEMA = StructType([
    StructField("record_id", StringType(), nullable=False),
    StructField("source_split", StringType(), nullable=False),
    StructField("source_index", LongType(), nullable=False),
    StructField("image", BinaryType(), nullable=True),
    StructField("label", IntegerType(), nullable=True),
])

CURATED_SCHEMA = StructType([
    StructField("record_id", StringType(), nullable=False),
    StructField("image", ArrayType(FloatType(), containsNull=False), nullable=False),
    StructField("label", IntegerType(), nullable=False),
])

QUARANTINE_SCHEMA = StructType([
    StructField("record_id", StringType(), nullable=False),
    StructField("source_split", StringType(), nullable=False),
    StructField("source_index", LongType(), nullable=False),
    StructField("label", IntegerType(), nullable=True),
    StructField("reason", StringType(), nullable=False),
])

BATCH_IMAGES_SCHEMA = StructType([
    StructField("record_id", StringType(), nullable=False),
    StructField("source_file", StringType(), nullable=False),
    StructField("image", ArrayType(FloatType(), containsNull=False), nullable=False),
])

BATCH_QUARANTINE_SCHEMA = StructType([
    StructField("record_id", StringType(), nullable=False),
    StructField("source_file", StringType(), nullable=False),
    StructField("reason", StringType(), nullable=False),
])

BATCH_PREDICTIONS_SCHEMA = StructType([
    StructField("record_id", StringType(), nullable=False),
    StructField("source_file", StringType(), nullable=False),
    StructField("prediction", IntegerType(), nullable=False),
    StructField("confidence", FloatType(), nullable=False),
    StructField("probabilities", ArrayType(FloatType(), containsNull=False), nullable=False),
    StructField("model_name", StringType(), nullable=False),
    StructField("model_version", StringType(), nullable=False),
])

ORIGIN_MNIST = "mnist"
TRAINING_SET_SCHEMA = StructType([*CURATED_SCHEMA.fields, StructField("origin", StringType(), nullable=False)])

# Exactly what normalise_images does to pixels; prepare records it in the curated manifest, predict checks it.
NORMALISATION = {"input_dtype": "uint8", "output_dtype": "float32", "scale": 1.0 / 255.0, "offset": 0.0,
                 "layout": "row-major height x width x 1, flattened"}


def normalise_images(df: DataFrame) -> DataFrame:
    """uint8 image bytes -> float32 in [0, 1] (NORMALISATION), vectorised over Arrow batches with NumPy."""
    return df.mapInArrow(_normalise_batches, CURATED_SCHEMA)


def _normalise_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        image = batch.column("image")
        yield pa.RecordBatch.from_arrays([batch.column("record_id"), normalised(image), batch.column("label")],
                                         names=CURATED_SCHEMA.fieldNames())


def normalised(image: pa.BinaryArray) -> pa.ListArray:
    """Binary pixels to a list<float32> array: float32(pixel) / 255, so 0 -> 0.0 and 255 -> exactly 1.0."""
    n = len(image)
    offsets = np.frombuffer(image.buffers()[1], dtype=np.int32)[image.offset:image.offset + n + 1]
    pixels = np.frombuffer(image.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
    values = pixels.astype(np.float32) / np.float32(255.0)
    return pa.ListArray.from_arrays(pa.array(offsets - offsets[0], pa.int32()), pa.array(values, pa.float32()))
