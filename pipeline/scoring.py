"""Distributed batch scoring: a saved Keras model applied with mapInPandas to a DataFrame of curated images, to
Parquet of the curated schema read where it is scored (score_parquet), or to image files read there. A small input
runs the same batch functions in the driver instead (pipeline.python_batches).

The one scorer of the project: evaluation scores the test set with it, prediction scores new data with it.
Each Python worker loads the model once (a module-level cache keyed by model path, kept across tasks because
Spark reuses Python workers) and scores Arrow batches of `batch_size` rows in one vectorised call, instead of
the row-by-row predictions of KerasModel.transform(). Models load only from checked .keras files in Keras safe
mode (pipeline.model_files): a model file must not be able to run code on the workers.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyspark.sql.functions as F
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    FloatType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

from pipeline import storage
from pipeline.config import PredictConfig
from pipeline.errors import PipelineError
from pipeline.metrics import confusion_matrix_from_counts
from pipeline.model_files import load_keras_model
from pipeline.python_batches import map_in_pandas, run_in_driver
from pipeline.schema import IMAGE_PIXELS, IMAGE_SHAPE

PREDICTION_FIELDS = [StructField("prediction", IntegerType(), nullable=False),
                     StructField("probabilities", ArrayType(FloatType(), containsNull=False), nullable=False)]
# Image files scored in one pass: an unreadable file has no prediction, and the reason in `error`.
SCORED_FILE_FIELDS = [StructField("path", StringType(), nullable=False),
                      StructField("prediction", IntegerType(), nullable=True),
                      StructField("probabilities", ArrayType(FloatType(), containsNull=False), nullable=True),
                      StructField("error", StringType(), nullable=True),
                      # No ink at all (a blank page, an empty scan): data.blank_images decides (predict/stage.py).
                      StructField("blank", BooleanType(), nullable=True)]
# The row groups score_parquet reads, one a row.
PIECES_SCHEMA = StructType([StructField("file", StringType(), nullable=False),
                            StructField("row_group", IntegerType(), nullable=False),
                            StructField("first_row", LongType(), nullable=False)])
CONFIDENCE_BINS = 20  # equal bins over [0, 1]: the daily scoring's confidence histogram (scoring.json)
LOSS_EPSILON = 1e-7  # Keras clips probabilities the same way in categorical cross-entropy

_MODEL_CACHE: dict[str, object] = {}
_LOADING: dict[str, Future] = {}  # prefetch_model's loads, until load_model_cached takes them


def set_arrow_batch_rows(spark: SparkSession, rows: int) -> None:
    """Make every Arrow batch handed to a Python worker hold `rows` rows: one model call per batch."""
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(int(rows)))


def score_images(df: DataFrame, model_path: str, batch_size: int, tf_threads: int = 1, *,
                 in_driver: bool = False) -> DataFrame:
    """`df` with an `image` column (IMAGE_PIXELS floats in [0, 1]) -> its other columns plus `prediction` and
    `probabilities`, scored on the executors or in the driver (pipeline.python_batches)."""
    keep = [field for field in df.schema.fields if field.name != "image"]
    keep_names = [field.name for field in keep]

    def score_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        return score_batches(batches, model_path, batch_size, tf_threads, keep_names)

    return map_in_pandas(df, score_partition, StructType(keep + PREDICTION_FIELDS), in_driver=in_driver)


def score_batches(batches: Iterator[pd.DataFrame], model_path: str, batch_size: int, tf_threads: int,
                  keep_names: list[str]) -> Iterator[pd.DataFrame]:
    """Worker side: one partition's Arrow batches scored `batch_size` rows per model call, the model taken from
    this process's cache (loaded on the first batch that needs it, not before: an empty partition loads none)."""
    model = None
    for batch in batches:
        if model is None:
            model = load_model_cached(model_path, tf_threads)
        for start in range(0, len(batch), batch_size):
            chunk = batch.iloc[start:start + batch_size]
            probabilities = predict_probabilities(model, chunk["image"])
            out = chunk[keep_names].reset_index(drop=True)
            out["prediction"] = probabilities.argmax(axis=1).astype(np.int32)
            out["probabilities"] = list(probabilities)
            yield out


def score_image_files(files: DataFrame, model_path: str, batch_size: int, tf_threads: int,
                      max_pixels: int) -> DataFrame:
    """Rows (path, source) -> (path, prediction, probabilities, error): each file read, converted to the MNIST
    convention and scored in the same Python worker, so the decoded images never travel to the JVM and back."""
    def score_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        return score_file_batches(batches, model_path, batch_size, tf_threads, max_pixels)

    return files.select("path", "source").mapInPandas(score_partition, StructType(SCORED_FILE_FIELDS))


def score_file_batches(batches: Iterator[pd.DataFrame], model_path: str, batch_size: int, tf_threads: int,
                       max_pixels: int) -> Iterator[pd.DataFrame]:
    """Worker side: decode a batch of files, then score its readable images `batch_size` per model call (the
    model loaded on the first readable image, not before)."""
    from pipeline.formats.images import decode_image_file
    model = None
    for batch in batches:
        decoded = [decode_image_file(source, max_pixels) for source in batch["source"]]
        readable = [i for i, (image, _) in enumerate(decoded) if image is not None]
        predictions, probabilities = [None] * len(decoded), [None] * len(decoded)
        for start in range(0, len(readable), batch_size):
            model = model or load_model_cached(model_path, tf_threads)
            rows = readable[start:start + batch_size]
            scores = _predict_array(model, np.stack([decoded[i][0] for i in rows]))
            for i, row_scores in zip(rows, scores, strict=True):
                predictions[i], probabilities[i] = int(row_scores.argmax()), row_scores
        yield pd.DataFrame({"path": batch["path"].to_numpy(), "prediction": pd.Series(predictions, dtype=object),
                            "probabilities": pd.Series(probabilities, dtype=object),
                            "error": [error for _, error in decoded],
                            "blank": [None if image is None else not image.any() for image, _ in decoded]})


@dataclass(frozen=True)
class ParquetImages:
    """Parquet of the curated schema, by row group: each is read, checked and scored where it is scored
    (score_parquet), so its images never pass through the JVM."""
    path: str
    pieces: tuple[tuple[str, int, int], ...]    # (file, row_group, first_row): one per row group
    rows: int
    labelled: bool
    has_record_id: bool


def curated_parquet(path: str) -> ParquetImages:
    """Parquet of the curated schema (prepare's splits, or any with an `image` list column), listed by row group from
    the files' footers for score_parquet. Its images are checked where they are scored (IMAGE_PIXELS values in
    [0, 1] in every row); its schema is checked here."""
    dataset = storage.parquet_dataset(path)
    columns = dataset.schema.names
    if "image" not in columns:
        raise PipelineError(f"{path}: no 'image' column (expected the curated schema: record_id, image, label)")
    image_type = dataset.schema.field("image").type
    if not (pa.types.is_list(image_type) or pa.types.is_large_list(image_type)) or not (
            pa.types.is_floating(image_type.value_type) or pa.types.is_integer(image_type.value_type)):
        raise PipelineError(f"{path}: its 'image' column is {image_type}, not a list of {IMAGE_PIXELS} numbers in "
                            "[0, 1] (the curated schema)")
    files = storage.parquet_files(path)
    pieces = tuple((file, group, sum(rows[:group])) for file, rows in files for group in range(len(rows)))
    return ParquetImages(path, pieces, sum(sum(rows) for _, rows in files), labelled="label" in columns,
                         has_record_id="record_id" in columns)


class BadImageArrays(ValueError):
    """A row of a Parquet file whose `image` is not IMAGE_PIXELS values in [0, 1]: its file and record. The driver
    catches it by name (it reaches the driver as a worker's text) and names the first bad row and how many there
    are (pipeline.predict.inputs.check_image_arrays)."""


def score_parquet(spark: SparkSession, parquet: ParquetImages, model_path: str, predict: PredictConfig) -> DataFrame:
    """Parquet listed by curated_parquet -> (record_id, [label], prediction, probabilities) of every record in it:
    each row group is read, checked and scored in one Python process, so the images (IMAGE_PIXELS floats a row)
    never pass through the JVM. That process is the driver for at most predict.driver_max_images rows, else the
    executors' Python workers. A file without a record_id column gets '<file>:<row in the file>'."""
    labelled, has_record_id = parquet.labelled, parquet.has_record_id
    fields = [StructField("record_id", StringType(), nullable=False),
              *([StructField("label", IntegerType(), nullable=False)] if labelled else []), *PREDICTION_FIELDS]
    batch_size, tf_threads = predict.batch_size, predict.tf_threads

    def score_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        return score_piece_batches(batches, model_path, batch_size, tf_threads, labelled, has_record_id)

    if scores_in_driver(parquet, predict):
        pieces = pd.DataFrame(parquet.pieces, columns=PIECES_SCHEMA.fieldNames())
        return run_in_driver(spark, pieces, score_partition, StructType(fields))
    pieces = spark.createDataFrame(parquet.pieces, PIECES_SCHEMA)
    return pieces.mapInPandas(score_partition, StructType(fields))


def scores_in_driver(parquet: ParquetImages, predict: PredictConfig) -> bool:
    """Whether score_parquet reads and scores `parquet` in this process (predict.driver_max_images)."""
    return parquet.rows <= predict.driver_max_images


def score_piece_batches(batches: Iterator[pd.DataFrame], model_path: str, batch_size: int, tf_threads: int,
                        labelled: bool, has_record_id: bool) -> Iterator[pd.DataFrame]:
    """Worker side: each row group read `batch_size` rows at a time (bounded memory whatever the writer's row groups),
    checked, and scored in one model call."""
    columns = ["image", *(["label"] if labelled else []), *(["record_id"] if has_record_id else [])]
    model = None
    for batch in batches:
        for file, row_group, first_row in zip(batch["file"], batch["row_group"], batch["first_row"], strict=True):
            parquet, row = storage.open_parquet(file), int(first_row)
            for records in parquet.iter_batches(batch_size, row_groups=[int(row_group)], columns=columns):
                ids = (records.column("record_id").to_pandas() if has_record_id
                       else pd.Series([f"{file}:{row + i}" for i in range(records.num_rows)]))
                images = image_matrix(records.column("image"), file, ids)
                model = model or load_model_cached(model_path, tf_threads)
                probabilities = _predict_array(model, images)
                out = pd.DataFrame({"record_id": ids})
                if labelled:
                    out["label"] = records.column("label").to_numpy(zero_copy_only=False).astype(np.int32)
                out["prediction"] = probabilities.argmax(axis=1).astype(np.int32)
                out["probabilities"] = list(probabilities)
                row += records.num_rows
                yield out


def image_matrix(images, file: str, ids: pd.Series) -> np.ndarray:
    """A pyarrow list column of images -> (rows, IMAGE_PIXELS) values; BadImageArrays names the first row that is
    not IMAGE_PIXELS values in [0, 1] (a missing image, another length, a value outside or NaN)."""
    import pyarrow.compute as pc
    lengths = pc.list_value_length(images).fill_null(-1).to_numpy(zero_copy_only=False)
    wrong = np.flatnonzero(lengths != IMAGE_PIXELS)
    if len(wrong):
        raise BadImageArrays(f"{file}: record {ids.iloc[wrong[0]]} holds {lengths[wrong[0]]} image values, "
                             f"not {IMAGE_PIXELS}")
    values = images.flatten().to_numpy(zero_copy_only=False).reshape(-1, IMAGE_PIXELS)
    outside = np.flatnonzero(~((values >= 0) & (values <= 1)).all(axis=1))
    if len(outside):
        raise BadImageArrays(f"{file}: record {ids.iloc[outside[0]]} holds image values outside [0, 1]")
    return values


def predict_probabilities(model, images: pd.Series) -> np.ndarray:
    """Class probabilities (float32, rows x classes) for a Series of flat IMAGE_PIXELS-value images, in one model
    call."""
    lengths = images.map(len)
    if (lengths != IMAGE_PIXELS).any():
        bad = int(lengths[lengths != IMAGE_PIXELS].iloc[0])
        raise ValueError(f"image arrays must hold {IMAGE_PIXELS} values, found one with {bad}")
    return _predict_array(model, np.stack(images.to_numpy()))


def _predict_array(model, images: np.ndarray) -> np.ndarray:
    """Class probabilities for (rows, IMAGE_PIXELS) images, in one model call."""
    x = images.astype(np.float32, copy=False).reshape(-1, *IMAGE_SHAPE)
    return np.asarray(model.predict_on_batch(x), dtype=np.float32)


def load_model_cached(model_path: str, tf_threads: int = 1):
    """The Keras model at `model_path`, loaded at most once per process (and one model kept at a time)."""
    model = _MODEL_CACHE.get(model_path)
    if model is None:
        _MODEL_CACHE.clear()  # evaluation scores several models in turn: keep only the current one in memory
        loading = _LOADING.pop(model_path, None)
        model = _MODEL_CACHE[model_path] = loading.result() if loading else _load_model(model_path, tf_threads)
    return model


def prefetch_model(model_path: str, tf_threads: int = 1) -> None:
    """Start loading the model in this process on a background thread, for a later load_model_cached (which
    waits for it, or raises what the load raised): TensorFlow's import takes seconds that the driver otherwise
    spends waiting for Spark."""
    if model_path not in _MODEL_CACHE and model_path not in _LOADING:
        loader = ThreadPoolExecutor(1, thread_name_prefix="model-prefetch")
        _LOADING[model_path] = loader.submit(_load_model, model_path, tf_threads)
        loader.shutdown(wait=False)  # its one thread ends with the load


def _load_model(model_path: str, tf_threads: int):
    _configured_tensorflow(tf_threads)
    with storage.local_file(model_path) as local:  # Keras loads local files only
        return load_keras_model(local)  # a checked .keras archive, in safe mode


def _configured_tensorflow(threads: int):
    """TensorFlow with `threads` intra/inter-op threads: every worker sharing the cores gets its slice."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # scoring is light: leave accelerators to training
    import tensorflow as tf
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass  # TF already initialised in this process: the first setting stands
    return tf


def confidence() -> Column:
    """The probability of the predicted class."""
    return F.element_at("probabilities", F.col("prediction") + 1)


def confidence_bin() -> Column:
    """The bin of a scored row's `confidence` column among CONFIDENCE_BINS equal bins over [0, 1] (1.0 in the last)."""
    return F.least(F.floor(F.col("confidence") * CONFIDENCE_BINS).cast("int"), F.lit(CONFIDENCE_BINS - 1))


def negative_log_likelihood() -> Column:
    """-log p(true label): its mean over a data set is the categorical cross-entropy (test loss)."""
    p_true = F.element_at("probabilities", F.col("label") + 1)
    return -F.log(F.greatest(p_true, F.lit(LOSS_EPSILON)))


def confusion_and_loss(scored: DataFrame, num_classes: int) -> tuple[np.ndarray, float]:
    """The confusion matrix and the mean cross-entropy of scored labelled rows, from one Spark aggregation by
    (label, prediction)."""
    cells = (scored.groupBy("label", "prediction")
             .agg(F.count(F.lit(1)).alias("n"), F.sum(negative_log_likelihood()).alias("nll"))
             .collect())
    matrix = confusion_matrix_from_counts(((r["label"], r["prediction"], r["n"]) for r in cells), num_classes)
    total = int(matrix.sum())
    return matrix, (float(sum(r["nll"] for r in cells)) / total if total else float("nan"))
