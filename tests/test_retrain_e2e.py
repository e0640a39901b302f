"""The weekly retraining end to end through the real MLflow registry (SQLite under a temp dir), with model_4's
configured recipe (conf/local.yaml), on a prepared split of 2,000 MNIST images; the champion in service is an
untrained model_1, registered and promoted first.

Two retrainings, in order, each one Horovod training:
1. ds 2026-11-24: the newest labelled day (held out of training) carries the CHAMPION's own predictions as its
   labels, so the challenger, far better on the test set, is clearly worse there: not promoted, it stays
   `challenger`, and the next day is still scored by the old champion's version.
2. ds 2026-12-01: a newest day with its true labels: better on both sets, promoted once; the same retraining run
   again (decision.json gone, as after a kill between the registry and the file) reads the recorded decision back
   and changes nothing; the next day is scored by the new champion and its drift is measured against the data the
   new champion was trained on.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from registry_versions import make_champion

from pipeline import storage
from pipeline.config import REPO_ROOT, load_config
from pipeline.formats.idx import read_array
from pipeline.layout import Layout, RetrainingFiles
from pipeline.retrain.job import retraining_config, retraining_layout, run_retraining
from pipeline.schema import BATCH_IMAGES_SCHEMA, CURATED_SCHEMA

pytestmark = [pytest.mark.slow, pytest.mark.horovod]

MNIST = REPO_ROOT / "data" / "mnist"
FIRST, SECOND = "2026-11-24", "2026-12-01"
TRAIN, VALIDATION, TEST = 2000, 300, 500


def mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    images = read_array(MNIST / f"{prefix}-images-idx3-ubyte.gz").reshape(-1, 784)
    return (images / 255.0).astype(np.float32), read_array(MNIST / f"{prefix}-labels-idx1-ubyte.gz")


def write_prepared(spark, layout: Layout) -> None:
    """Prepared train / validation / test rows (train and validation from MNIST's training images, test from its
    test images), 100 rows per Parquet file, and their manifest."""
    train_x, train_y = mnist("train")
    test_x, test_y = mnist("test")
    splits = {"train": (train_x, train_y, range(TRAIN)),
              "validation": (train_x, train_y, range(TRAIN, TRAIN + VALIDATION)), "test": (test_x, test_y, range(TEST))}
    for split, (x, y, indices) in splits.items():
        rows = pd.DataFrame({"record_id": [f"{split}:{i}" for i in indices], "image": list(x[indices]),
                             "label": y[indices].astype(np.int32)})
        spark.createDataFrame(rows, CURATED_SCHEMA).coalesce(1).write.option("maxRecordsPerFile", 100) \
            .parquet(layout.prepared(split))
    storage.write_json(layout.prepared_manifest, {"fingerprint": "e2e-prepared", "counts": {
        "train": TRAIN, "validation": VALIDATION, "test": TEST}, "num_classes": 10})


def write_batch_day(spark, layout: Layout, ds: str, indices: range, labels: np.ndarray | None = None) -> None:
    """MNIST test images `indices` as the day's scored images, labelled with `labels` (default: the true ones)."""
    x, y = mnist("test")
    files = layout.batch_files(ds)
    names = [f"scans/{i:05d}.png" for i in indices]
    rows = pd.DataFrame({"record_id": names, "source_file": names, "image": list(x[indices])})
    spark.createDataFrame(rows, BATCH_IMAGES_SCHEMA).coalesce(1).write.parquet(files.images)
    Path(files.landing).mkdir(parents=True, exist_ok=True)
    labels = y[indices] if labels is None else labels
    Path(files.labels).write_text("file,label\n" + "".join(f"{n},{int(v)}\n" for n, v in zip(names, labels,
                                                                                             strict=True)))


def champion_predictions(spark, cfg, model_file: str, indices: range) -> np.ndarray:
    """What the champion predicts for MNIST test images `indices`, by the pipeline's own scorer."""
    from pipeline.scoring import score_images
    x, _ = mnist("test")
    frame = spark.createDataFrame(pd.DataFrame({"record_id": [str(i) for i in indices], "image": list(x[indices])}))
    scored = {int(r["record_id"]): r["prediction"]
              for r in score_images(frame, model_file, cfg.predict.batch_size).collect()}
    return np.array([scored[i] for i in indices])


def untrained_model_1(path: Path) -> str:
    """An untrained model_1 (it scores near chance), saved by a TensorFlow of its own process."""
    script = ("import sys, tensorflow as tf; from pipeline.train.models import build_model; "
              "tf.keras.utils.set_random_seed(5); build_model('model_1').save(sys.argv[1])")
    subprocess.run([sys.executable, "-c", script, str(path)], check=True, timeout=300,
                   env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"})
    return str(path)


def decision_of(layout: Layout) -> dict:
    return storage.read_json(RetrainingFiles(layout.retraining_root).decision)


def scored_day(spark, cfg, ds: str) -> dict:
    """A day of scanned digits landed, scored with the champion (no model named) and checked for drift."""
    from pipeline.batch.arrivals import simulate_day
    from pipeline.batch.drift import run_drift_check
    from pipeline.batch.score import run_batch_scoring
    layout = Layout.from_config(cfg)
    files = layout.batch_files(ds)
    simulate_day(cfg, files, 40)
    run_batch_scoring(spark, cfg, layout, ds)
    run_drift_check(spark, cfg, layout, ds)
    versions = {r["model_version"] for r in spark.read.parquet(files.predictions).select("model_version").collect()}
    return {"versions": versions, "drift": storage.read_json(files.drift)}


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("retrain-e2e")
    cfg = load_config(REPO_ROOT / "conf" / "local.yaml", None, [
        f"paths.data={root / 'data'}", f"paths.runs={root / 'runs'}", f"paths.landing={root / 'landing'}",
        f"paths.batches={root / 'batches'}", f"paths.mlflow={root / 'mlflow'}", "spark.master=local[2]",
        "data.row_group_rows=100", "retrain.models=model_4", "retrain.epochs=2", "evaluate.target_accuracy=0.5",
        "evaluate.misclassified_examples=0", "drift.max_class_distance=1.0", "drift.max_low_confidence_share=1.0"])
    write_prepared(spark, retraining_layout(retraining_config(cfg), FIRST))
    champion_file = untrained_model_1(root / "champion.keras")
    champion = make_champion(cfg, champion_file, "model_1", 0.6)
    return {"cfg": cfg, "champion": champion, "champion_file": champion_file}


@pytest.fixture(scope="module")
def rejected(spark, world):
    """Retraining 1: the newest day's labels are the champion's own predictions."""
    cfg = world["cfg"]
    layout = retraining_layout(retraining_config(cfg), FIRST)
    write_batch_day(spark, layout, "2026-11-20", range(1000, 1200))
    newest = range(1200, 1300)
    as_the_champion_sees_them = champion_predictions(spark, cfg, world["champion_file"], newest)
    write_batch_day(spark, layout, "2026-11-23", newest, as_the_champion_sees_them)
    result = run_retraining(spark, cfg, Layout.from_config(cfg), ds=FIRST)
    return {"layout": layout, "result": result, "next_day": scored_day(spark, cfg, "2026-11-25")}


@pytest.fixture(scope="module")
def promoted(spark, world, rejected):
    """Retraining 2: a newest day with its true labels; then the same retraining again without its decision.json."""
    from pipeline.tracking.store import connect
    cfg = world["cfg"]
    layout = retraining_layout(retraining_config(cfg), SECOND)
    write_batch_day(spark, layout, "2026-11-30", range(1300, 1400))
    first = run_retraining(spark, cfg, Layout.from_config(cfg), ds=SECOND)
    client, name = connect(cfg).client, cfg.tracking.registered_model
    tags_after_first = {v.version: dict(v.tags) for v in client.search_model_versions(f"name = '{name}'")}
    Path(RetrainingFiles(layout.retraining_root).decision).unlink()
    again = run_retraining(spark, cfg, Layout.from_config(cfg), ds=SECOND)
    return {"layout": layout, "first": first, "again": again, "tags_after_first": tags_after_first,
            "next_day": scored_day(spark, cfg, "2026-12-02")}


def registry_state(cfg) -> dict:
    from pipeline.tracking.store import connect
    client, name = connect(cfg).client, cfg.tracking.registered_model
    return {alias: str(client.get_model_version_by_alias(name, alias).version) for alias in ("champion", "challenger")}


def test_a_retraining_trains_the_configured_recipe(world, rejected):
    recipe = load_config(REPO_ROOT / "conf" / "local.yaml").train.models["model_4"]
    layout = rejected["layout"]
    history = storage.read_json(layout.history("model_4"))
    assert (history["keep"], history["augment"], history["schedule"], history["batch_size_per_worker"],
            history["learning_rate"]) == (recipe.keep, recipe.augment, recipe.schedule, recipe.batch_size,
                                          recipe.learning_rate)
    assert (history["epochs_planned"], history["complete"], history["run_id"]) == (2, True, layout.run_id)
    assert (history["train_rows"], history["validation_rows"]) == (TRAIN + 200, VALIDATION)
    assert decision_of(layout)["challenger"]["recipe"] == {**recipe.__dict__, "epochs": 2}


def test_a_challenger_worse_on_the_newest_batches_is_not_promoted(world, rejected):
    decision = decision_of(rejected["layout"])
    challenger, champion = decision["challenger"], decision["champion"]
    assert decision["promoted"] is False and champion["version"] == world["champion"]
    assert challenger["test_accuracy"] > 0.5 > champion["test_accuracy"], decision
    # Near-uniform probabilities of an untrained network: a near-tie may break the other way in another batching.
    assert champion["newest_batches_accuracy"] >= 0.95 and challenger["newest_batches_accuracy"] < 0.5, decision
    assert [(c["name"], c["passed"]) for c in decision["conditions"]] == [
        ("target", True), ("test_set", True), ("newest_batches", False)]
    assert decision["reason"].startswith("on the 100 newest labelled images the challenger's ")
    assert decision["newest_batches"] == {"days": ["2026-11-23"], "rows": 100, "in_training_data": False}
    assert registry_state(world["cfg"]) == {"champion": world["champion"], "challenger": challenger["version"]}
    assert rejected["next_day"]["versions"] == {world["champion"]}
    summary = Path(RetrainingFiles(rejected["layout"].retraining_root).decision_summary).read_text()
    assert "- **newest_batches** (FAILED): on the 100 newest labelled images" in summary


def test_a_challenger_better_on_both_is_promoted_once(world, rejected, promoted):
    decision = decision_of(promoted["layout"])
    assert decision["promoted"] is True and decision["champion"]["version"] == world["champion"], decision
    assert [c["passed"] for c in decision["conditions"]] == [True, True, True]
    new = decision["challenger"]["version"]
    assert registry_state(world["cfg"]) == {"champion": new, "challenger": new}
    # Run again with its decision.json gone: the registry's recorded decision is read back, nothing moves.
    assert promoted["again"].details == promoted["first"].details == decision
    from pipeline.tracking.store import connect
    client, name = connect(world["cfg"]).client, world["cfg"].tracking.registered_model
    assert {v.version: dict(v.tags) for v in client.search_model_versions(f"name = '{name}'")} == \
        promoted["tags_after_first"]


def test_after_a_promotion_the_next_day_is_scored_and_checked_against_the_new_champions_data(world, promoted):
    decision = decision_of(promoted["layout"])
    assert promoted["next_day"]["versions"] == {decision["challenger"]["version"]}
    baseline = promoted["next_day"]["drift"]["baseline"]
    assert baseline["source"] == RetrainingFiles(promoted["layout"].retraining_root).train
    assert baseline["images"] == sum(decision["training_data"]["origins"].values()) == TRAIN + 300


def test_the_same_ds_again_is_skipped_without_a_second_decision(spark, world, promoted):
    again = run_retraining(spark, world["cfg"], Layout.from_config(world["cfg"]), ds=SECOND)
    assert again.skipped and again.details == decision_of(promoted["layout"])
