"""Labels that arrive after a day's images: `<landing>/ds=<date>/labels.csv` (`file,label`), where file is the
image's path relative to the day's landing folder, i.e. the record_id of its row in the day's images partition.

Parsing runs on the driver (the file is one short line per image of one day) so every problem is reported with
its line; the join with the images is a DataFrame transform.
"""
from __future__ import annotations

import csv
import io
import re

import pyspark.sql.functions as F
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import IntegerType, StringType, StructField, StructType

from pipeline import storage
from pipeline.errors import PipelineError
from pipeline.schema import NUM_CLASSES, TRAINING_SET_SCHEMA

LABELS_HEADER = ["file", "label"]
LABELS_SCHEMA = StructType([StructField("file", StringType(), nullable=False),
                            StructField("label", IntegerType(), nullable=False)])
_DIGITS = re.compile(r"[0-9]+")


def read_labels(spark: SparkSession, path: str) -> DataFrame:
    """The labels file at `path` as a (file, label) DataFrame; any problem with it is one PipelineError line."""
    try:
        text = storage.read_bytes(path).decode("utf-8")
    except OSError as exc:
        raise PipelineError(f"labels file {path} cannot be read: {exc}") from None
    except UnicodeDecodeError:
        raise PipelineError(f"labels file {path} is not UTF-8 text") from None
    return spark.createDataFrame(parse_labels(text, path), LABELS_SCHEMA)


def parse_labels(text: str, path: str) -> list[tuple[str, int]]:
    """(file, label) rows of a labels file: a `file,label` header, then one row per image, each image once and
    each label a digit class; blank lines are ignored, and so is the byte-order mark spreadsheets write."""
    try:
        rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"))))
    except csv.Error as exc:
        raise PipelineError(f"labels file {path} is not valid CSV: {exc}") from None
    if not rows or [cell.strip() for cell in rows[0]] != LABELS_HEADER:
        found = ",".join(rows[0]) if rows else "an empty file"
        raise PipelineError(f"labels file {path} must start with the header 'file,label', found '{found}'")
    labels: dict[str, tuple[int, int]] = {}  # file -> (label, line)
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        file, label = _checked_row(row, path, line)
        if file in labels:
            raise PipelineError(f"labels file {path} line {line}: '{file}' is labelled twice (first on line "
                                f"{labels[file][1]})")
        labels[file] = (label, line)
    return [(file, label) for file, (label, _) in labels.items()]


def _checked_row(row: list[str], path: str, line: int) -> tuple[str, int]:
    if len(row) != len(LABELS_HEADER):
        raise PipelineError(f"labels file {path} line {line}: expected 2 fields (file,label), found {len(row)}")
    file, label = row[0].strip(), row[1].strip()
    if not file:
        raise PipelineError(f"labels file {path} line {line}: the file name is empty")
    if not _DIGITS.fullmatch(label) or int(label) >= NUM_CLASSES:
        raise PipelineError(f"labels file {path} line {line}: label '{label}' of '{file}' is not a class "
                            f"0..{NUM_CLASSES - 1}")
    return file, int(label)


def check_labels_known(labels: DataFrame, images: DataFrame, quarantined: DataFrame | None, path: str) -> None:
    """Every labelled file must be one of the day's images (scored or quarantined): a label for anything else
    means the labels were made for another landing, and training on them would be wrong."""
    known = images.select(F.col("record_id").alias("file"))
    if quarantined is not None:
        known = known.unionByName(quarantined.select(F.col("record_id").alias("file")))
    unknown = labels.join(known, "file", "left_anti")
    first = unknown.orderBy("file").select("file").limit(1).collect()
    if first:
        raise PipelineError(f"labels file {path} labels {unknown.count()} file(s) that are not among the day's "
                            f"images, e.g. '{first[0]['file']}'")


def with_labels(images: DataFrame, labels: DataFrame, ds: str) -> DataFrame:
    """The day's images that have a label, as training rows (TRAINING_SET_SCHEMA) of origin `ds`; images without
    a label yet are left out."""
    joined = images.join(labels, images["record_id"] == labels["file"], "inner")
    columns = {"record_id": images["record_id"], "image": images["image"], "label": labels["label"],
               "origin": F.lit(ds)}
    return joined.select(*(columns[name].alias(name) for name in TRAINING_SET_SCHEMA.fieldNames()))
