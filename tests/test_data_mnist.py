"""The bundled MNIST through ingest and prepare (the session fixture `mnist_curated` runs them once)."""
from __future__ import annotations

import pyarrow.parquet as pq
import pyspark.sql.functions as F

from pipeline import storage
from pipeline.config import REPO_ROOT
from pipeline.data.prepare import run_prepare
from pipeline.layout import SPLITS
from pipeline.schema import NORMALISATION


def test_counts_and_labels(spark, mnist_curated):
    _, layout = mnist_curated
    manifest = storage.read_json(layout.curated_manifest)
    source = storage.read_json(layout.raw_manifest)["label_counts"]
    assert manifest["counts"] == {"train": 54000, "validation": 6000, "test": 10000}
    assert {s: spark.read.parquet(layout.curated(s)).count() for s in SPLITS} == manifest["counts"]
    for label in map(str, range(10)):
        assert manifest["label_counts"]["train"][label] + manifest["label_counts"]["validation"][label] == \
            source["train"][label]
        assert abs(manifest["label_counts"]["validation"][label] - 6000 * source["train"][label] / 60000) < 1
    assert manifest["label_counts"]["test"] == source["test"]
    assert manifest["normalisation"] == NORMALISATION and manifest["image_shape"] == [28, 28, 1]


def test_splits_disjoint_and_pixels_in_unit_range(spark, mnist_curated):
    _, layout = mnist_curated
    frames = [spark.read.parquet(layout.curated(s)).withColumn("split", F.lit(s)) for s in SPLITS]
    union = frames[0].unionByName(frames[1]).unionByName(frames[2])
    stats = union.groupBy("split").agg(F.min(F.array_min("image")).alias("low"),
                                       F.max(F.array_max("image")).alias("high"),
                                       F.min(F.size("image")).alias("size_low"), F.max(F.size("image")).alias("size"),
                                       F.countDistinct("record_id").alias("ids")).collect()
    assert {r.split: (r.low, r.high, r.size_low, r.size) for r in stats} == {s: (0.0, 1.0, 784, 784) for s in SPLITS}
    assert union.select("record_id").distinct().count() == 70000
    assert union.filter((F.col("split") == "test") != F.col("record_id").startswith("t10k-images")).count() == 0


def test_manifest_checksums_match_bundled_sums(mnist_curated):
    _, layout = mnist_curated
    sums = dict(reversed(line.split()) for line in (REPO_ROOT / "data/mnist/SHA256SUMS").read_text().splitlines())
    assert storage.read_json(layout.curated_manifest)["source_checksums"] == sums
    assert storage.read_json(layout.raw_manifest)["checksums_verified"] is True


def test_row_groups_and_petastorm_shard(mnist_curated):
    from petastorm import make_batch_reader
    _, layout = mnist_curated
    groups = {s: sum(pq.ParquetFile(f).num_row_groups for f in _parquet_files(layout.curated(s))) for s in SPLITS}
    assert groups["train"] >= 27 and groups["validation"] >= 3 and groups["test"] >= 5
    with make_batch_reader("file://" + layout.curated("validation"), cur_shard=0, shard_count=2, num_epochs=1,
                           reader_pool_type="thread", workers_count=1) as reader:
        batch = next(iter(reader))
    assert len(batch.image) > 0 and batch.image[0].shape == (784,) and 0 <= batch.label.min() <= batch.label.max() < 10


def test_rerun_skips(spark, mnist_curated):
    cfg, layout = mnist_curated
    assert run_prepare(spark, cfg, layout)["skipped"] is True


def _parquet_files(path: str) -> list[str]:
    from pathlib import Path
    return sorted(str(p) for p in Path(path).glob("*.parquet"))
