"""A pandas batch function run on the executors' Python workers or in the driver (pipeline.python_batches): the
same rows either way, and the same one line when it fails."""
from __future__ import annotations

import pandas as pd
import pytest
from pyspark.sql.types import LongType, StringType, StructField, StructType
from pyspark.testing import assertDataFrameEqual

from pipeline.failures import job_failure, working_on
from pipeline.python_batches import map_in_pandas

SCHEMA = StructType([StructField("id", LongType(), nullable=False), StructField("word", StringType())])


def test_the_driver_gives_the_rows_the_workers_give_in_the_declared_schema(spark):
    def _odd_ids_spelt(batches):  # nested: pickled by value, the workers need not import this module
        for batch in batches:   # keeps some rows of a batch, none of a batch of even ids
            odd = batch[batch["id"] % 2 == 1]
            yield pd.DataFrame({"word": [f"n{i}" for i in odd["id"]], "id": odd["id"].to_numpy()})
    ids = spark.range(0, 50, numPartitions=4)
    on_workers = map_in_pandas(ids, _odd_ids_spelt, SCHEMA, in_driver=False)
    in_driver = map_in_pandas(ids, _odd_ids_spelt, SCHEMA, in_driver=True)
    assert in_driver.schema == on_workers.schema == SCHEMA
    assertDataFrameEqual(in_driver, on_workers)
    assert in_driver.count() == 25
    nothing = map_in_pandas(spark.range(0, 10, 2), _odd_ids_spelt, SCHEMA, in_driver=True)
    assert nothing.schema == SCHEMA and nothing.count() == 0


@pytest.mark.parametrize("in_driver", [False, True], ids=["workers", "driver"])
def test_a_failing_batch_function_is_the_same_one_line_wherever_it_ran(spark, in_driver):
    def _refuse(batches):
        for _ in batches:
            raise ValueError("model m.keras refused: not a valid .keras file")
        yield from ()
    with pytest.raises(Exception) as raised, working_on("scoring day 2026-11-20 with m version 3"):
        map_in_pandas(spark.range(3), _refuse, SCHEMA, in_driver=in_driver).collect()
    assert str(job_failure(raised.value)) == ("scoring day 2026-11-20 with m version 3 failed: ValueError: model "
                                              "m.keras refused: not a valid .keras file")
