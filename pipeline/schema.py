"""The data sets' schemas, declared once. Every reader, writer and test derives its columns from here.

Raw table (one row per source record, written by ingest):
  record_id     string   "<source file>:<index>", stable across reruns and partitionings
  source_split  string   "train" or "test": the split of origin in the source files
  source_index  long     position of the record in its source file
  image         binary   height*width bytes, uint8, row-major (row 0 first), exactly as in IDX files
  label         int      0..num_classes-1

Curated tables (train / validation / test, written by prepare, read by Petastorm's make_batch_reader):
  record_id     string
  image         array<float>  height*width*1 values in [0, 1], row-major; reshape to (height, width, 1)
  label         int      class index; training one-hot encodes it on the fly (categorical cross-entropy)

Quarantine table (records that failed record checks, written by ingest):
  record_id, source_split, source_index, label (may be null), reason
"""
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

# Exactly what prepare does to pixels; recorded in the curated manifest and applied again by predict.
NORMALISATION = {"input_dtype": "uint8", "output_dtype": "float32", "scale": 1.0 / 255.0, "offset": 0.0,
                 "layout": "row-major height x width x 1, flattened"}
