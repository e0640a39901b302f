"""Prepare on a tiny IDX input: one pass writes every split with the rank-based split's rows, normalised, in small
row groups; a raw table that no longer matches its manifest publishes nothing."""
from __future__ import annotations

import json
import os
import struct

import numpy as np
import pyarrow.parquet as pq
import pytest
from split_reference import assign_splits

from pipeline import storage
from pipeline.data.ingest import run_ingest
from pipeline.data.prepare import run_prepare
from pipeline.data.split import plan_ranges
from pipeline.errors import PipelineError
from pipeline.layout import SPLITS, Layout
from pipeline.schema import RAW_SCHEMA

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 20)}


def write_idx(folder, name: str, array: np.ndarray) -> None:
    (folder / name).write_bytes(bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
                                + array.tobytes())


@pytest.fixture(scope="module")
def prepared(spark, tmp_path_factory):
    """A 60 + 20 image IDX set ingested and prepared with 7-row row groups; returns (cfg, layout)."""
    from pipeline.config import load_config
    root = tmp_path_factory.mktemp("prepare")
    rng = np.random.default_rng(5)
    (root / "in").mkdir()
    for images, labels, n in FILES.values():
        write_idx(root / "in", images, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(root / "in", labels, (np.arange(n) % 10).astype(np.uint8))
    cfg = load_config(None, "full", [f"paths.data={root / 'data'}", f"paths.runs={root / 'runs'}",
                                     f"paths.input={root / 'in'}", "spark.master=local[2]", "data.format=idx",
                                     *(f"data.{split}_{kind}={FILES[split][i]}" for split in FILES
                                       for i, kind in enumerate(("images", "labels"))),
                                     "data.records_per_partition=16", "data.row_group_rows=7",
                                     "prepare.validation_size=0.25"])
    layout = Layout.from_config(cfg)
    run_ingest(spark, cfg, layout)
    run_prepare(spark, cfg, layout)
    return cfg, layout


def test_every_split_holds_the_ranked_records_normalised_in_small_row_groups(spark, prepared):
    cfg, layout = prepared
    raw = spark.read.schema(RAW_SCHEMA).parquet(layout.raw)
    ranges = plan_ranges(storage.read_json(layout.raw_manifest)["label_counts"], cfg.prepare)
    expected = dict(assign_splits(raw, ranges, cfg.prepare.seed).select("record_id", "split").collect())
    images = {row.record_id: (row.image, row.label) for row in raw.collect()}
    written = {row.record_id: (split, row) for split in SPLITS
               for row in spark.read.parquet(layout.curated(split)).collect()}
    assert {record_id: split for record_id, (split, _) in written.items()} == expected
    for record_id, (_, row) in written.items():
        pixels, label = images[record_id]
        assert row.label == label
        assert np.array_equal(np.array(row.image, np.float32),
                              np.frombuffer(pixels, np.uint8).astype(np.float32) / np.float32(255.0))
    assert storage.read_json(layout.curated_manifest)["counts"] == {"train": 45, "validation": 15, "test": 20}
    for split in SPLITS:
        files = [f"{layout.curated(split)}/{n}" for n in os.listdir(layout.curated(split)) if n.endswith(".parquet")]
        sizes = [pq.ParquetFile(f).metadata.row_group(i).num_rows for f in files
                 for i in range(pq.ParquetFile(f).num_row_groups)]
        assert max(sizes) <= 7 and sum(sizes) == storage.read_json(layout.curated_manifest)["counts"][split]


def test_a_raw_table_not_matching_its_manifest_publishes_nothing(spark, prepared):
    cfg, layout = prepared
    manifest = storage.read_json(layout.raw_manifest)
    tampered = {**manifest, "label_counts": {**manifest["label_counts"],
                                             "test": {**manifest["label_counts"]["test"], "3": 99}}}
    storage.write_text(layout.raw_manifest, json.dumps(tampered))
    before = {split: sorted(os.listdir(layout.curated(split))) for split in SPLITS}
    try:
        with pytest.raises(PipelineError, match="the raw table does not match its manifest's label counts: rerun "
                                                "ingest with --force"):
            run_prepare(spark, cfg, layout, force=True)
    finally:
        storage.write_text(layout.raw_manifest, json.dumps(manifest))
    assert not storage.exists(layout.curated_manifest)
    assert {split: sorted(os.listdir(layout.curated(split))) for split in SPLITS} == before
    parent = layout.curated("train").rsplit("/", 1)[0]
    assert not [n for n in os.listdir(parent) if ".tmp-" in n]
