"""Where a pandas batch function runs: on the executors' Python workers, or here in the driver.

A day of a few hundred images is less work than starting a Python worker and importing PIL and TensorFlow in it,
which a single process does once. `map_in_pandas(..., in_driver=True)` runs the very function `mapInPandas` would
ship, over the input collected to this process, and hands back a DataFrame of the same schema: everything after it
(checks, writes, aggregates) is the same Spark plan whichever way the batches ran. Rows that are in this process
already (`run_in_driver`, e.g. a landing folder's file names) need not go through Spark on the way in: in a fresh
JVM that round trip is a Spark job of its own, about a second.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

BatchFunction = Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]


class PythonBatchError(RuntimeError):
    """A batch function failed in the driver, told as a Python worker's failure is ("ValueError: ..."), so that
    the job's one line (pipeline.failures.spark_worker_failure) is the same whichever way the batches ran."""


def map_in_pandas(df: DataFrame, fn: BatchFunction, schema: StructType, *, in_driver: bool) -> DataFrame:
    """`df.mapInPandas(fn, schema)`, or (in_driver) the same over `df` collected here as one batch."""
    if not in_driver:
        return df.mapInPandas(fn, schema)
    return run_in_driver(df.sparkSession, df.toPandas(), fn, schema)  # a Spark failure in toPandas stays Spark's


def run_in_driver(spark: SparkSession, rows: pd.DataFrame, fn: BatchFunction, schema: StructType) -> DataFrame:
    """`fn` over `rows`, here, as one batch: a DataFrame of `schema` holding what it yielded."""
    try:
        out = [batch for batch in fn(iter([rows])) if len(batch)]
    except Exception as exc:
        raise PythonBatchError(f"{type(exc).__name__}: {exc}") from exc
    if not out:
        return spark.createDataFrame([], schema)
    return spark.createDataFrame(pd.concat(out, ignore_index=True)[schema.fieldNames()], schema)
