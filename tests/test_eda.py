"""EDA stage: every aggregate against NumPy on the same small synthetic curated data, the figures, the stage."""
from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline import storage
from pipeline.eda import aggregates, figures
from pipeline.eda.stage import run_eda, validation_findings
from pipeline.errors import PipelineError
from pipeline.layout import SPLITS, Layout
from pipeline.validation_report import DuplicateImages, read_validation_report

SIZES = {"train": 240, "validation": 60, "test": 100}
BINS = 8


@pytest.fixture(scope="module")
def arrays():
    """Per split: record ids, float32 images (k/255, ~70% exact zeros) and labels; every label in every split."""
    rng = np.random.default_rng(2024)
    data = {}
    for split, n in SIZES.items():
        levels = rng.integers(1, 256, size=(n, 784)) * (rng.random((n, 784)) < 0.3)
        levels[0, :5] = 255  # full ink reaches the last histogram bin
        labels = np.concatenate([np.arange(10), rng.integers(0, 10, n - 10)]).astype(np.int32)
        rng.shuffle(labels)
        data[split] = {"ids": [f"{split}:{i}" for i in range(n)], "images": (levels / 255.0).astype(np.float32),
                       "labels": labels}
    return data


def write_curated(layout: Layout, arrays: dict) -> None:
    """The synthetic splits as curated Parquet (CURATED_SCHEMA) plus a curated manifest, as prepare writes them."""
    for split, d in arrays.items():
        table = pa.table({"record_id": d["ids"], "image": pa.array(list(d["images"]), type=pa.list_(pa.float32())),
                          "label": pa.array(d["labels"], type=pa.int32())})
        storage.makedirs(layout.curated(split))
        pq.write_table(table.slice(0, len(d["ids"]) // 2), f"{layout.curated(split)}/part-0.parquet")
        pq.write_table(table.slice(len(d["ids"]) // 2), f"{layout.curated(split)}/part-1.parquet")
    storage.write_json(layout.curated_manifest, {"fingerprint": "curated-abc", "counts": SIZES})


@pytest.fixture(scope="module")
def curated(spark, arrays, tmp_path_factory):
    root = tmp_path_factory.mktemp("eda-curated")
    layout = Layout(str(root), str(root), str(root / "curated"), str(root / "run"))
    write_curated(layout, arrays)
    return aggregates.union_splits({s: spark.read.parquet(layout.curated(s)) for s in SPLITS})


@pytest.fixture(scope="module")
def summaries(curated):
    return aggregates.class_summaries(curated).cache()


def pooled(arrays, split=None, label=None):
    """The images of one split (or all) and one label (or all), as float64 for exact reference sums."""
    chosen = []
    for s, d in arrays.items():
        if split in (None, s):
            chosen.append(d["images"][d["labels"] == label] if label is not None else d["images"])
    return np.concatenate(chosen).astype(np.float64)


def test_label_distribution_and_imbalance_match_numpy(curated, arrays):
    distribution = aggregates.label_distribution(curated)
    rows = {(r["split"], r["label"]): r for r in distribution.collect()}
    for split, d in arrays.items():
        counts = np.bincount(d["labels"], minlength=10)
        for label in range(10):
            assert rows[(split, label)]["count"] == counts[label]
            assert rows[(split, label)]["share"] == pytest.approx(counts[label] / SIZES[split], abs=1e-12)
    imbalance = {r["split"]: r for r in aggregates.imbalance(distribution).collect()}
    for split, d in arrays.items():
        counts = np.bincount(d["labels"], minlength=10)
        assert imbalance[split]["images"] == SIZES[split]
        assert imbalance[split]["imbalance_ratio"] == pytest.approx(counts.max() / counts.min())


def test_pixel_statistics_match_numpy(summaries, arrays):
    rows = {(r["split"], r["label"]): r for r in aggregates.pixel_statistics(summaries).collect()}
    assert len(rows) == 3 * 10 + 3 + 10 + 1  # per (split, class), per split, per class, overall
    for split in (*SPLITS, None):
        for label in (*range(10), None):
            images = pooled(arrays, split, label)
            row = rows[(split or aggregates.ALL, aggregates.ALL if label is None else str(label))]
            assert row["images"] == len(images)
            assert row["mean"] == pytest.approx(images.mean(), abs=1e-9)
            assert row["std"] == pytest.approx(images.std(), abs=1e-9)
            assert row["ink_share"] == pytest.approx((images > 0).mean(), abs=1e-12)


def test_mean_images_match_numpy(summaries, arrays):
    rows = {(r["split"], r["label"]): r for r in aggregates.mean_images(summaries).collect()}
    for split in (*SPLITS, None):
        for label in (*range(10), None):
            images = pooled(arrays, split, label)
            row = rows[(split or aggregates.ALL, aggregates.ALL if label is None else str(label))]
            assert row["images"] == len(images)
            np.testing.assert_allclose(row["mean_image"], images.mean(axis=0), rtol=0, atol=1e-9)


def test_pixel_histogram_matches_numpy(curated, arrays):
    rows = aggregates.pixel_histogram(curated, BINS).collect()
    for split, d in arrays.items():
        expected, edges = np.histogram(d["images"].astype(np.float64), bins=BINS, range=(0.0, 1.0))
        got = [r for r in rows if r["split"] == split]
        assert [r["bin"] for r in got] == list(range(BINS))
        assert [r["count"] for r in got] == expected.tolist()
        assert [r["lower"] for r in got] == pytest.approx(edges[:-1].tolist())
        assert sum(r["share"] for r in got) == pytest.approx(1.0)
    assert [r["count"] for r in rows if r["split"] == "train"][-1] > 0  # 1.0 lands in the last bin


def test_split_drift_matches_numpy(curated, summaries, arrays):
    distribution = aggregates.label_distribution(curated)
    stats = aggregates.pixel_statistics(summaries)
    rows = aggregates.split_drift(distribution, stats, list(SPLITS)).collect()
    assert [r["label"] for r in rows] == list(range(10))
    for row in rows:
        label = row["label"]
        shares = [np.mean(arrays[s]["labels"] == label) for s in SPLITS]
        means = [pooled(arrays, s, label).mean() for s in SPLITS]
        assert [row[f"{s}_share"] for s in SPLITS] == pytest.approx(shares, abs=1e-12)
        assert row["share_max_diff"] == pytest.approx(max(shares) - min(shares), abs=1e-12)
        assert row["mean_max_diff"] == pytest.approx(max(means) - min(means), abs=1e-9)


def test_sample_is_seeded_distinct_and_independent_of_partitioning(curated):
    train = curated.where(curated.split == "train")

    def ids(df, seed):
        return [r["record_id"] for r in aggregates.sample_records(df, seed, 10).collect()]
    first = ids(train, 7)
    assert len(first) == 10 and len(set(first)) == 10
    assert all(i.startswith("train:") for i in first)
    assert ids(train, 7) == first
    assert ids(train.repartition(5), 7) == first
    assert ids(train, 8) != first


def test_sample_grid_titles_match_labels():
    samples = [{"record_id": f"train:{i}", "label": (i * 3) % 10, "image": np.full(784, i / 10.0)} for i in range(10)]
    fig = figures.sample_grid(samples, 28, 28, seed=7)
    images = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in images] == [f"label {(i * 3) % 10}" for i in range(10)]
    assert [ax.get_xlabel() for ax in images] == [f"train:{i}" for i in range(10)]


def png_size(path: str) -> tuple[int, int]:
    image = Image.open(io.BytesIO(storage.read_bytes(path)))
    assert image.format == "PNG"
    image.verify()
    return image.size


def ingest_report(cfg):
    """A validation report as ingest's own writer builds it: 4 of 150 train records quarantined, 3 duplicates."""
    from pipeline.record_checks import build_report
    flags = {"blank": False, "in_test": False, "dropped": False}
    counts = [{"source_split": "train", "label": 1, "reason": None, "count": 146, "first": (0, "tr:0"), **flags},
              {"source_split": "train", "label": 2, "reason": "label outside 0-9", "count": 4, "first": (3, "tr:3"),
               **flags},
              {"source_split": "test", "label": 1, "reason": None, "count": 50, "first": (0, "te:0"), **flags}]
    duplicates = DuplicateImages(within_train=2, within_test=0, test_in_train=1)
    return build_report(counts, duplicates, cfg.data, {"train": "train.idx", "test": "test.idx"})


def test_run_eda_writes_outputs_then_skips_and_force_redoes(spark, make_config, arrays):
    cfg = make_config(f"eda.histogram_bins={BINS}", "data.max_quarantine_fraction=0.1")
    layout = Layout.from_config(cfg)
    write_curated(layout, arrays)
    storage.write_json(layout.validation_report, ingest_report(cfg))
    result = run_eda(spark, cfg, layout)

    assert result.skipped is False and result.counts == SIZES
    summary = storage.read_json(layout.eda_files.summary)
    train = arrays["train"]
    label_of = dict(zip(train["ids"], train["labels"].tolist(), strict=True))
    records = summary["sample"]["records"]
    assert len({r["record_id"] for r in records}) == 10
    assert all(label_of[r["record_id"]] == r["label"] for r in records)
    assert summary["label_distribution"]["test"]["counts"]["3"] == int(np.sum(arrays["test"]["labels"] == 3))
    assert summary["validation"]["quarantined"] == 4 and summary["validation"]["duplicates"] == 3
    for name in ("sample_grid", "label_distribution", "mean_images", "pixel_histogram"):
        width, height = png_size(layout.eda_files.figure(name))
        assert width >= 800 and height >= 400, (name, width, height)
    histogram = storage.read_text(layout.eda_files.table("histogram")).splitlines()
    assert histogram[0] == "split,bin,lower,upper,count,share" and len(histogram) == 1 + 3 * BINS
    for table in ("label_distribution", "pixel_stats", "drift", "mean_images"):
        assert storage.exists(layout.eda_files.table(table))

    assert run_eda(spark, cfg, layout).skipped is True
    assert run_eda(spark, cfg, layout, force=True).skipped is False


def test_run_eda_names_missing_inputs(spark, make_config, arrays):
    cfg = make_config()
    layout = Layout.from_config(cfg)
    with pytest.raises(PipelineError, match=r"curated-\w+/manifest\.json not found: run jobs/prepare\.py first$"):
        run_eda(spark, cfg, layout)
    write_curated(layout, {"train": arrays["train"]})
    with pytest.raises(PipelineError, match=r"curated-\w+/validation not found: run jobs/prepare\.py first$"):
        run_eda(spark, cfg, layout)
    storage.makedirs(layout.curated("validation"))
    pq.write_table(pa.table({"record_id": ["v:0"], "label": pa.array([1], type=pa.int32())}),
                   f"{layout.curated('validation')}/part-0.parquet")
    with pytest.raises(PipelineError, match="curated split 'validation' at .* lacks column\\(s\\) image"):
        run_eda(spark, cfg, layout)


def test_validation_findings_read_what_ingest_writes(make_config, tmp_path):
    assert validation_findings(None) == {"report_found": False}
    cfg = make_config("data.max_quarantine_fraction=0.1")
    path = str(tmp_path / "validation_report.json")
    storage.write_json(path, ingest_report(cfg))
    assert validation_findings(read_validation_report(path)) == {
        "report_found": True, "status": "passed", "duplicates": 3,
        "duplicates_by_kind": {"within_train": 2, "within_test": 0, "test_in_train": 1},
        "quarantined": 4, "quarantined_by_split": {"test": 0, "train": 4}, "quarantined_fraction": 0.02,
        "quarantine_reasons": {"label outside 0-9": 4}}


def test_a_validation_report_of_another_shape_is_refused(tmp_path):
    path = str(tmp_path / "validation_report.json")
    storage.write_json(path, {"status": "passed", "quarantined_rows": 5, "duplicate_count": 2})
    with pytest.raises(PipelineError, match=r"^validation report .*validation_report.json lacks class_balance, "
                                            r"dropped, duplicate_images, error, findings, label_counts, "
                                            r"max_quarantine_fraction, quarantine_reasons, quarantined, "
                                            r"quarantined_fraction, records, valid: it was not written by this "
                                            r"version of ingest; rerun jobs/ingest.py --force$"):
        read_validation_report(path)
    storage.write_text(path, "{not json")
    with pytest.raises(PipelineError, match=r"validation_report.json is damaged \(not a JSON object\): rerun "
                                            r"jobs/ingest.py$"):
        read_validation_report(path)
