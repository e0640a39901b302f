"""The bundled MNIST through ingest and prepare (the session fixture `mnist_curated` runs them once)."""
from __future__ import annotations

import numpy as np
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


def test_row_groups_hold_at_most_data_row_group_rows(mnist_curated):
    """Petastorm shards by row group: 1,000-row groups give every Horovod rank several of every split."""
    _, layout = mnist_curated
    for split, rows in {"train": 54000, "validation": 6000, "test": 10000}.items():
        sizes = [pq.ParquetFile(f).metadata.row_group(i).num_rows for f in _parquet_files(layout.curated(split))
                 for i in range(pq.ParquetFile(f).num_row_groups)]
        assert sum(sizes) == rows and max(sizes) <= 1000 and len(sizes) >= rows // 1000, (split, sizes)


def test_petastorm_shards_of_validation_hold_every_row_once_on_every_open(spark, mnist_curated):
    """What each rank's validation pass reads: opened 10 times, both shards together give all 6,000 rows once. The
    thread pool's end-of-read race that once lost rows here is forced, with a control that shows it bite, in
    tests/test_train_inputs.py: 100 opens of the real split (24 s) only sampled it."""
    from pipeline.train.inputs import open_exact_reader
    _, layout = mnist_curated
    url = "file://" + layout.curated("validation")
    expected = sorted(r.record_id for r in spark.read.parquet(layout.curated("validation")).select("record_id")
                      .collect())
    for attempt in range(10):
        ids = []
        for shard in (0, 1):
            reader = open_exact_reader(url, ["record_id", "label"], shard, 2)
            try:
                ids.extend(i for batch in reader for i in batch.record_id.tolist())
            finally:
                reader.stop()
                reader.join()
        assert sorted(ids) == expected, f"open {attempt}: {len(ids)} rows, {len(set(ids))} distinct"


def test_petastorm_batches_carry_normalised_images(mnist_curated):
    from pipeline.train.inputs import open_exact_reader
    _, layout = mnist_curated
    reader = open_exact_reader("file://" + layout.curated("validation"), ["image", "label"], 0, 2)
    try:
        batches = list(reader)
    finally:
        reader.stop()
        reader.join()
    images = np.concatenate([b.image for b in batches])
    labels = np.concatenate([b.label for b in batches])
    assert images.shape[1:] == (784,) and len(images) == len(labels) > 0 and images.dtype == np.float32
    assert 0.0 == images.min() < images.max() == 1.0 and set(labels.tolist()) == set(range(10))


def test_rerun_skips(spark, mnist_curated):
    cfg, layout = mnist_curated
    assert run_prepare(spark, cfg, layout).skipped is True


def _parquet_files(path: str) -> list[str]:
    from pathlib import Path
    return sorted(str(p) for p in Path(path).glob("*.parquet"))
