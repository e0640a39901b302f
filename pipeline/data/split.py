"""Where the split is decided: stratified, seeded, and independent of partitioning and row order.

Every record gets a rank within its (source split, label) group, ordered by a seeded hash of its record id
(record id breaks hash ties), so the same seed gives the same ranks whatever the partitions or row order.
The driver turns the per-label counts into rank ranges with largest-remainder allocation, so totals are exact
and each class is within one record of its exact share:
  source train, label c: ranks 1..v_c -> validation, v_c+1..n_c -> train
  source test:           every record -> test (untouched)
A subset (quick profile) keeps the first ranks of each range, so it is itself a stratified seeded sample.
"""
from __future__ import annotations

import math
from fractions import Fraction

import pyspark.sql.functions as F
from pyspark.sql import Column, DataFrame, Window

from pipeline.config import PrepareConfig
from pipeline.errors import PipelineError

RAW_CHANGED = "the raw table does not match its manifest's label counts: rerun ingest with --force"


def allocate(total: int, weights: dict[int, int]) -> dict[int, int]:
    """Split `total` across keys in proportion to `weights`: floors, then +1 for the largest remainders."""
    whole = sum(weights.values())
    if whole == 0:
        return {key: 0 for key in weights}
    quotas = {key: Fraction(total * weight, whole) for key, weight in weights.items()}
    shares = {key: math.floor(quota) for key, quota in quotas.items()}
    left = total - sum(shares.values())
    for key in sorted(quotas, key=lambda k: (shares[k] - quotas[k], k))[:left]:
        shares[key] += 1
    return shares


def validation_count(validation_size: float, train_records: int) -> int:
    """prepare.validation_size as a count: >= 1 is a count, below 1 a fraction of the training records."""
    if validation_size >= 1 and validation_size != int(validation_size):
        raise PipelineError(f"prepare.validation_size {validation_size} must be a whole count or a fraction below 1")
    count = int(validation_size) if validation_size >= 1 else math.floor(validation_size * train_records + 0.5)
    if not 0 < count < train_records:
        raise PipelineError(f"prepare.validation_size {validation_size} gives {count} validation records: it must "
                            f"leave both splits non-empty ({train_records} training records)")
    return count


def plan_ranges(label_counts: dict[str, dict[str, int]], prepare: PrepareConfig) -> list[tuple]:
    """Rank ranges (source_split, label, split, first_rank, last_rank) from per-label counts of the source splits."""
    fraction = prepare.subset_fraction
    if not 0 < fraction <= 1:
        raise PipelineError(f"prepare.subset_fraction {fraction} must be in (0, 1]")
    train = {int(k): n for k, n in label_counts.get("train", {}).items()}
    test = {int(k): n for k, n in label_counts.get("test", {}).items()}
    validation = allocate(validation_count(prepare.validation_size, sum(train.values())), train)
    rest = {label: train[label] - validation[label] for label in train}
    keep = {name: allocate(math.floor(fraction * sum(counts.values()) + 0.5), counts)
            for name, counts in (("validation", validation), ("train", rest), ("test", test))}
    ranges = []
    for label in sorted(train):
        ranges.append(("train", label, "validation", 1, keep["validation"][label]))
        ranges.append(("train", label, "train", validation[label] + 1, validation[label] + keep["train"][label]))
    ranges += [("test", label, "test", 1, keep["test"][label]) for label in sorted(test)]
    return [r for r in ranges if r[4] >= r[3]]


def record_hash(seed: int) -> Column:
    """A stable 64-bit hash of (seed, record_id): the record's place in the seeded order."""
    return F.xxhash64(F.lit(seed).cast("long"), F.col("record_id"))


def with_rank(df: DataFrame, seed: int) -> DataFrame:
    """Rank (1-based) within (source_split, label) by the seeded hash, record id breaking ties."""
    order = Window.partitionBy("source_split", "label").orderBy(record_hash(seed), F.col("record_id"))
    return df.withColumn("rank", F.row_number().over(order))


def split_bounds(raw: DataFrame, ranges: list[tuple], seed: int) -> list[tuple]:
    """(source_split, label, split, first key, last key) of each rank range, a key being the (seeded hash,
    record id) its rank orders by. Only the slim columns are ranked, and only a few dozen boundary rows come back."""
    ends = [(source, label, rank) for source, label, _, first, last in ranges for rank in {first, last}]
    wanted = raw.sparkSession.createDataFrame(ends, "source_split string, label int, rank int")
    keys = {(row["source_split"], row["label"], row["rank"]): (row["hash"], row["record_id"]) for row in
            raw.select("record_id", "source_split", "label").transform(with_rank, seed)
            .join(F.broadcast(wanted), ["source_split", "label", "rank"])
            .select("source_split", "label", "rank", record_hash(seed).alias("hash"), "record_id").collect()}
    if len(keys) != len(set(ends)):       # a rank the plan needs is missing: fewer records than the manifest says
        raise PipelineError(RAW_CHANGED)
    return [(source, label, split, keys[(source, label, first)], keys[(source, label, last)])
            for source, label, split, first, last in ranges]


def with_split(raw: DataFrame, bounds: list[tuple], seed: int) -> DataFrame:
    """`split` of every record (null when not kept): the records whose rank lies in a range of the plan, found by
    comparing each record's key with the range's first and last keys (`bounds`, from split_bounds), so the images
    need no shuffle and no join."""
    hash_, record_id = record_hash(seed), F.col("record_id")

    def at_least(key: tuple) -> Column:
        return (hash_ > F.lit(key[0])) | ((hash_ == F.lit(key[0])) & (record_id >= F.lit(key[1])))

    def at_most(key: tuple) -> Column:
        return (hash_ < F.lit(key[0])) | ((hash_ == F.lit(key[0])) & (record_id <= F.lit(key[1])))

    split = F.lit(None).cast("string")
    for source, label, name, first, last in reversed(bounds):
        inside = (F.col("source_split") == source) & (F.col("label") == label) & at_least(first) & at_most(last)
        split = F.when(inside, F.lit(name)).otherwise(split)
    return raw.withColumn("split", split)
