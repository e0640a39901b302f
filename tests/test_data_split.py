"""The split: exact stratified counts, determinism across partitionings and row orders."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pyspark.sql.functions as F
import pytest
from pyspark.errors import PySparkAssertionError
from pyspark.testing import assertDataFrameEqual
from split_reference import assign_splits

from pipeline.config import PrepareConfig
from pipeline.data.split import allocate, plan_ranges, split_bounds, validation_count, with_split
from pipeline.errors import PipelineError

MNIST_TRAIN = {"0": 5923, "1": 6742, "2": 5958, "3": 6131, "4": 5842, "5": 5421, "6": 5918, "7": 6265, "8": 5851,
               "9": 5949}
# A skewed synthetic source: label k has 40 + 13k training records, and 30 test records.
TRAIN_COUNTS = {str(k): 40 + 13 * k for k in range(10)}
TEST_COUNTS = {str(k): 30 for k in range(10)}


def test_allocate_is_exact_and_within_one_of_each_share():
    assert allocate(10, {0: 1, 1: 1, 2: 1}) == {0: 4, 1: 3, 2: 3}
    shares = allocate(6000, {int(k): n for k, n in MNIST_TRAIN.items()})
    assert sum(shares.values()) == 6000
    for label, n in MNIST_TRAIN.items():
        assert abs(shares[int(label)] - Fraction(6000 * n, 60000)) < 1


@pytest.mark.parametrize("size, expected", [(6000, 6000), (0.1, 6000), (1, 1)])
def test_validation_count(size, expected):
    assert validation_count(size, 60000) == expected


@pytest.mark.parametrize("size, message", [
    (60000, r"prepare.validation_size 60000 gives 60000 validation records: it must leave both splits non-empty"),
    (0.0, r"prepare.validation_size 0.0 gives 0 validation records"),
    (6000.5, r"prepare.validation_size 6000.5 must be a whole count or a fraction below 1"),
])
def test_validation_count_errors(size, message):
    with pytest.raises(PipelineError, match=message):
        validation_count(size, 60000)


def test_plan_for_mnist_gives_54000_6000_10000():
    ranges = plan_ranges({"train": MNIST_TRAIN, "test": {str(k): 1000 for k in range(10)}}, PrepareConfig())
    totals = {}
    for _, _, split, first, last in ranges:
        totals[split] = totals.get(split, 0) + last - first + 1
    assert totals == {"validation": 6000, "train": 54000, "test": 10000}


def test_subset_fraction_must_be_a_fraction():
    with pytest.raises(PipelineError, match=r"prepare.subset_fraction 0.0 must be in \(0, 1\]"):
        plan_ranges({"train": MNIST_TRAIN, "test": {}}, PrepareConfig(subset_fraction=0.0))


@pytest.fixture(scope="module")
def synthetic_raw(spark):
    """A raw-like table (record_id, source_split, label) with skewed classes; no images needed to split."""
    rows = [(f"train:{i}", "train", int(label)) for i, label in
            enumerate(np.repeat(np.arange(10), [TRAIN_COUNTS[str(k)] for k in range(10)]))]
    rows += [(f"test:{i}", "test", i % 10) for i in range(300)]
    return spark.createDataFrame(rows, "record_id string, source_split string, label int")


def half_up(x: float) -> int:
    return math.floor(x + 0.5)


def _assigned(df, prepare: PrepareConfig):
    """(record_id, split) of every kept record."""
    ranges = plan_ranges({"train": TRAIN_COUNTS, "test": TEST_COUNTS}, prepare)
    return assign_splits(df, ranges, prepare.seed).select("record_id", "split")


def _assignment(df, prepare: PrepareConfig) -> dict[str, str]:
    return dict(_assigned(df, prepare).collect())


def test_split_identical_across_partitionings_and_row_orders(synthetic_raw):
    prepare = PrepareConfig(validation_size=0.1)
    one = _assigned(synthetic_raw.coalesce(1), prepare)
    assertDataFrameEqual(_assigned(synthetic_raw.repartition(7).orderBy(F.rand(3)), prepare), one)
    with pytest.raises(PySparkAssertionError, match="DIFFERENT_ROWS"):
        assertDataFrameEqual(_assigned(synthetic_raw, PrepareConfig(validation_size=0.1, seed=43)), one)


def test_split_is_stratified_disjoint_and_keeps_test(synthetic_raw):
    assignment = _assignment(synthetic_raw, PrepareConfig(validation_size=0.1))
    train_total = sum(TRAIN_COUNTS.values())
    labels = dict(synthetic_raw.select("record_id", "label").collect())
    assert len(assignment) == train_total + 300                        # every record once: none in two splits
    validation = [r for r, s in assignment.items() if s == "validation"]
    assert len(validation) == half_up(0.1 * train_total) == 99
    for label, n in TRAIN_COUNTS.items():
        count = sum(1 for r in validation if labels[r] == int(label))
        assert abs(count - Fraction(len(validation) * n, train_total)) < 1
    assert {r for r, s in assignment.items() if s == "test"} == {f"test:{i}" for i in range(300)}


def test_subset_is_a_stratified_part_of_the_full_split(synthetic_raw):
    full = _assignment(synthetic_raw, PrepareConfig(validation_size=0.1))
    subset = _assignment(synthetic_raw, PrepareConfig(validation_size=0.1, subset_fraction=0.2))
    counts = {s: sum(1 for v in subset.values() if v == s) for s in ("train", "validation", "test")}
    validation_full = sum(1 for v in full.values() if v == "validation")
    train_full = sum(TRAIN_COUNTS.values()) - validation_full
    assert counts == {"train": half_up(0.2 * train_full), "validation": half_up(0.2 * validation_full), "test": 60}
    assert all(full[r] == s for r, s in subset.items())                # a subset never moves a record


@pytest.mark.parametrize("prepare", [PrepareConfig(validation_size=0.1), PrepareConfig(validation_size=0.1, seed=7),
                                     PrepareConfig(validation_size=0.1, subset_fraction=0.2)])
def test_boundary_keys_keep_exactly_the_ranked_records(synthetic_raw, prepare):
    """Prepare's one-pass split (with_split over split_bounds) gives the same rows as ranking every record."""
    ranges = plan_ranges({"train": TRAIN_COUNTS, "test": TEST_COUNTS}, prepare)
    df = synthetic_raw.repartition(3)
    one_pass = (df.transform(with_split, split_bounds(df, ranges, prepare.seed), prepare.seed)
                .filter(F.col("split").isNotNull()).select("record_id", "split"))
    assertDataFrameEqual(one_pass, _assigned(synthetic_raw, prepare))
