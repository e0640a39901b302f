"""The reference split for the tests: every record ranked and joined with its rank range (what prepare did before
it compared keys with split_bounds instead), to show that prepare's one-pass split keeps exactly the same rows."""
from __future__ import annotations

import pyspark.sql.functions as F
from pyspark.sql import DataFrame

from pipeline.data.split import with_rank


def assign_splits(raw: DataFrame, ranges: list[tuple], seed: int) -> DataFrame:
    """(record_id, split, label) for every kept record: the ranks plan_ranges keeps, by a join on every record."""
    bounds = raw.sparkSession.createDataFrame(ranges, "source_split string, label int, split string, first_rank int, "
                                           "last_rank int")
    ranked = raw.select("record_id", "source_split", "label").transform(with_rank, seed)
    return (ranked.join(F.broadcast(bounds), ["source_split", "label"])
            .filter(F.col("rank").between(F.col("first_rank"), F.col("last_rank")))
            .select("record_id", "split", "label"))
