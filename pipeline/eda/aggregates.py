"""The EDA's numbers as pure DataFrame -> DataFrame transforms, run on the executors.

Input is the curated data with a `split` column added (`with_split`). Every function returns a small DataFrame
(tens of rows): only those aggregates, and the few sample rows a figure shows, ever reach the driver.

Why this is cheap on 70,000 images x 784 pixels: the data is read twice, once per heavy aggregation.
- `class_summaries`: `Summarizer` (pyspark.ml.stat) on a vector view of each image keeps one buffer of 784
  doubles per (split, label) group, merged map-side, and yields the mean image, sums, sums of squares and
  non-zero counts in that single pass. The alternatives were slower or heavier: `posexplode` + `groupBy`
  shuffles 55 million (split, label, position, value) rows; higher-order functions (`aggregate`, `zip_with`)
  run interpreted per element. Everything else (pixel statistics, per-split mean images, drift) derives from
  those 30 summary rows.
- `pixel_histogram`: the only explode, keeping one int bin per pixel, with map-side partial counts, so what
  crosses the shuffle is one row per (split, bin) per partition.
"""
from __future__ import annotations

from functools import reduce

import pyspark.sql.functions as F
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.stat import Summarizer
from pyspark.sql import Column, DataFrame, Window

ALL = "all"  # the split / label value of a row that aggregates over every split / label


def with_split(df: DataFrame, split: str) -> DataFrame:
    """Tag every row with the split it came from, so the splits can be aggregated in one pass."""
    return df.withColumn("split", F.lit(split))


def union_splits(frames: dict[str, DataFrame]) -> DataFrame:
    """One DataFrame of (split, record_id, image, label) from one DataFrame per split."""
    tagged = [frame.select("record_id", "image", "label").transform(with_split, split)
              for split, frame in frames.items()]
    return reduce(DataFrame.unionByName, tagged)


def class_summaries(df: DataFrame) -> DataFrame:
    """The one heavy pass: per (split, label) the image count, mean image, pixel sum, sum of squares, ink pixels.

    Summarizer's per-position count/mean/normL2/numNonZeros give every per-class pixel statistic at once:
    sum = mean * count, sum of squares = normL2^2, ink = numNonZeros, each summed over the 784 positions
    (on the 30 summary rows, not on the data).
    """
    metrics = Summarizer.metrics("count", "mean", "normL2", "numNonZeros")
    summary = (df.select("split", "label", F.size("image").alias("size"), array_to_vector("image").alias("vector"))
               .groupBy("split", "label")
               .agg(metrics.summary(F.col("vector")).alias("s"), F.max("size").alias("size")))
    mean_image = vector_to_array("s.mean")
    return summary.select(
        "split", "label", F.col("s.count").alias("images"), (F.col("s.count") * F.col("size")).alias("pixels"),
        mean_image.alias("mean_image"),
        (_array_sum(mean_image) * F.col("s.count")).alias("pixel_sum"),
        _array_sum(F.transform(vector_to_array("s.normL2"), lambda x: x * x)).alias("pixel_sumsq"),
        _array_sum(vector_to_array("s.numNonZeros")).alias("ink"))


def _array_sum(values: Column) -> Column:
    return F.aggregate(values, F.lit(0.0).cast("double"), lambda acc, x: acc + x)


def label_distribution(df: DataFrame) -> DataFrame:
    """Images per (split, label) and each label's share of its split."""
    per_split = Window.partitionBy("split")
    return (df.groupBy("split", "label").count()
            .withColumn("share", F.col("count") / F.sum("count").over(per_split))
            .orderBy("split", "label"))


def imbalance(distribution: DataFrame) -> DataFrame:
    """Per split: largest and smallest class count and their ratio (1.0 is perfectly balanced)."""
    return (distribution.groupBy("split")
            .agg(F.sum("count").alias("images"), F.countDistinct("label").alias("classes"),
                 F.max("count").alias("largest"), F.min("count").alias("smallest"))
            .withColumn("imbalance_ratio", F.col("largest") / F.col("smallest"))
            .orderBy("split"))


def pixel_statistics(summaries: DataFrame) -> DataFrame:
    """Pixel mean, population std and ink share per (split, label), per split and per label ('all') and overall.

    A cube over the class summaries (30 rows); std = sqrt(E[x^2] - E[x]^2) in double, exact enough for values
    in [0, 1] (the tests compare with NumPy to 1e-9).
    """
    mean = F.col("pixel_sum") / F.col("pixels")
    return (summaries.cube("split", "label")
            .agg(*[F.sum(c).alias(c) for c in ("images", "pixels", "pixel_sum", "pixel_sumsq", "ink")])
            .select(F.coalesce("split", F.lit(ALL)).alias("split"),
                    F.coalesce(F.col("label").cast("string"), F.lit(ALL)).alias("label"),
                    "images", mean.alias("mean"),
                    F.sqrt(F.greatest(F.col("pixel_sumsq") / F.col("pixels") - mean * mean, F.lit(0.0)))
                    .alias("std"),
                    (F.col("ink") / F.col("pixels")).alias("ink_share"))
            .orderBy("split", "label"))


def mean_images(summaries: DataFrame) -> DataFrame:
    """The mean image (array of height*width doubles) per (split, label), per split, per label and overall.

    A cube over the class summaries (30 rows): class mean images weighted by their image counts, which is
    exactly the mean of the pooled images.
    """
    weighted = summaries.select("split", "label", "images", array_to_vector("mean_image").alias("vector"))
    return (weighted.cube("split", "label")
            .agg(F.sum("images").alias("images"),
                 Summarizer.mean(F.col("vector"), F.col("images").cast("double")).alias("mean"))
            .select(F.coalesce("split", F.lit(ALL)).alias("split"),
                    F.coalesce(F.col("label").cast("string"), F.lit(ALL)).alias("label"),
                    "images", vector_to_array("mean").alias("mean_image"))
            .orderBy("split", "label"))


def histogram_bin(value: Column, bins: int) -> Column:
    """Equal-width bin of a value in [0, 1]; 1.0 falls in the last bin (as in numpy.histogram)."""
    return F.least(F.floor(value * bins).cast("int"), F.lit(bins - 1))


def pixel_histogram(df: DataFrame, bins: int) -> DataFrame:
    """Pixel-intensity counts per (split, bin) over [0, 1], with every bin present (empty bins count 0)."""
    counts = (df.select("split", F.explode("image").alias("value"))
              .select("split", histogram_bin(F.col("value"), bins).alias("bin"))
              .groupBy("split", "bin").count())
    # The splits come from the counts themselves: Spark reuses their shuffle instead of rescanning the images.
    all_bins = df.sparkSession.range(bins).select(F.col("id").cast("int").alias("bin"))
    grid = counts.select("split").distinct().crossJoin(all_bins)
    per_split = Window.partitionBy("split")
    return (grid.join(counts, ["split", "bin"], "left").fillna(0, subset=["count"])
            .withColumn("lower", F.col("bin") / F.lit(bins))
            .withColumn("upper", (F.col("bin") + 1) / F.lit(bins))
            .withColumn("share", F.col("count") / F.sum("count").over(per_split))
            .select("split", "bin", "lower", "upper", "count", "share")
            .orderBy("split", "bin"))


def split_drift(distribution: DataFrame, stats: DataFrame, splits: list[str]) -> DataFrame:
    """Per label: its share and mean intensity in every split, and the largest gap between any two splits."""
    per_class = (distribution.select("split", F.col("label").cast("string").alias("label"), "share")
                 .join(stats.where(F.col("label") != ALL).select("split", "label", "mean"), ["split", "label"]))
    wide = per_class.groupBy("label").pivot("split", splits).agg(F.first("share").alias("share"),
                                                                  F.first("mean").alias("mean"))
    shares = [F.col(f"{s}_share") for s in splits]
    means = [F.col(f"{s}_mean") for s in splits]
    return (wide.withColumn("share_max_diff", F.greatest(*shares) - F.least(*shares))
            .withColumn("mean_max_diff", F.greatest(*means) - F.least(*means))
            .withColumn("label", F.col("label").cast("int"))
            .orderBy("label"))


def sample_order(seed: int) -> Column:
    """A per-record order that depends on the seed and the record alone, never on partitioning."""
    return F.xxhash64(F.lit(seed), F.col("record_id"))


def sample_records(df: DataFrame, seed: int, count: int) -> DataFrame:
    """`count` records picked by seed: the smallest seeded hashes, ties broken by record_id.

    record_id is unique in curated data, so these are `count` distinct records; orderBy + limit runs as a
    top-k per partition, so only `count` rows per partition move, never the whole split.
    """
    return (df.orderBy(sample_order(seed), "record_id")
            .limit(count)
            .select("record_id", "label", "image"))
