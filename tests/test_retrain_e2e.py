"""The retraining job end to end on a tiny set: a prepared split of 600 MNIST images, two labelled days and one
without labels; model_1 trained for one epoch by Horovod on 2 workers, evaluated, both models scored on the newest
batch, decision.json written; then the same ds again, skipped. The registry is a stand-in with the seam's three
methods (pipeline/retrain/promotion.py), so this test does not need the MLflow registry."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import storage
from pipeline.config import REPO_ROOT, load_config
from pipeline.formats.idx import read_array
from pipeline.layout import Layout, RetrainingFiles
from pipeline.retrain.decision import labelled_accuracy
from pipeline.retrain.job import retraining_config, retraining_layout, run_retraining
from pipeline.retrain.promotion import ModelVersion
from pipeline.schema import BATCH_IMAGES_SCHEMA, CURATED_SCHEMA

pytestmark = [pytest.mark.slow, pytest.mark.horovod]

MNIST = REPO_ROOT / "data" / "mnist"
DS = "2026-11-24"


def mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    images = read_array(MNIST / f"{prefix}-images-idx3-ubyte.gz").reshape(-1, 784)
    return (images / 255.0).astype(np.float32), read_array(MNIST / f"{prefix}-labels-idx1-ubyte.gz")


class StandInRegistry:
    """The seam as the registry will fill it: the champion is an untrained model_1 (version 1); the decision
    applies the promotion rule to the evaluation's best model and the champion scored on the same test set."""

    def __init__(self, spark, champion_file: str) -> None:
        self.spark, self.champion_file, self.decisions, self.recorded = spark, champion_file, 0, []

    def champion(self, cfg) -> ModelVersion:
        return ModelVersion("digits", "1", self.champion_file)

    def decision(self, cfg, evaluation) -> dict:
        self.decisions += 1
        test = self.spark.read.parquet(Layout.from_config(cfg).curated("test"))
        champion = labelled_accuracy(self.spark, cfg, test, self.champion_file)["accuracy"]
        challenger = evaluation.details["best_test_accuracy"]
        promoted = challenger >= cfg.evaluate.target_accuracy and challenger > champion
        return {"promoted": promoted, "challenger_version": "2", "challenger_accuracy": challenger,
                "champion_version": "1", "champion_accuracy": champion, "target": cfg.evaluate.target_accuracy,
                "margin": 0.0, "reason": "meets the target and beats the champion" if promoted else "kept"}

    def record(self, cfg, decision: dict) -> None:
        self.recorded.append(decision)


def write_prepared(spark, layout: Layout) -> None:
    """600 / 200 / 300 prepared rows (train and validation from MNIST's training images, test from its test
    images), 100 rows per Parquet file, and their manifest."""
    train_x, train_y = mnist("train")
    test_x, test_y = mnist("test")
    splits = {"train": (train_x, train_y, range(600)), "validation": (train_x, train_y, range(600, 800)),
              "test": (test_x, test_y, range(300))}
    for split, (x, y, indices) in splits.items():
        rows = pd.DataFrame({"record_id": [f"{split}:{i}" for i in indices], "image": list(x[indices]),
                             "label": y[indices].astype(np.int32)})
        spark.createDataFrame(rows, CURATED_SCHEMA).coalesce(1).write.option("maxRecordsPerFile", 100) \
            .parquet(layout.prepared(split))
    storage.write_json(layout.prepared_manifest, {"fingerprint": "e2e-prepared", "counts": {
        "train": 600, "validation": 200, "test": 300}, "num_classes": 10})


def write_batch_day(spark, layout: Layout, ds: str, indices: range, labelled: int) -> None:
    """MNIST test images `indices` as the day's scored images; labels for the first `labelled` of them."""
    x, y = mnist("test")
    files = layout.batch_files(ds)
    names = [f"scans/{i:05d}.png" for i in indices]
    rows = pd.DataFrame({"record_id": names, "source_file": names, "image": list(x[indices])})
    spark.createDataFrame(rows, BATCH_IMAGES_SCHEMA).coalesce(1).write.parquet(files.images)
    Path(files.landing).mkdir(parents=True, exist_ok=True)
    if labelled:
        lines = [f"{name},{int(y[i])}" for name, i in list(zip(names, indices, strict=True))[:labelled]]
        Path(files.labels).write_text("file,label\n" + "\n".join(lines) + "\n")


def save_untrained_champion(path: Path) -> str:
    import os
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    import tensorflow as tf

    from pipeline.train.models import build_model
    tf.keras.utils.set_random_seed(5)  # an untrained network scores near chance: the same one every time
    model = build_model("model_1")
    model.save(path)
    return str(path)


@pytest.fixture(scope="module")
def retrained(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("retrain-e2e")
    cfg = load_config(None, "full", [
        f"paths.data={root / 'data'}", f"paths.runs={root / 'runs'}", f"paths.landing={root / 'landing'}",
        f"paths.batches={root / 'batches'}", "spark.master=local[2]", "train.num_workers=2",
        "train.models={model_1: {epochs: 3}}", "retrain.epochs=1", "evaluate.target_accuracy=0.5",
        "evaluate.misclassified_examples=0", "tracking.enabled=false"])  # the stand-in registry, not MLflow
    layout = retraining_layout(retraining_config(cfg), DS)
    write_prepared(spark, layout)
    write_batch_day(spark, layout, "2026-11-20", range(1000, 1200), labelled=200)
    write_batch_day(spark, layout, "2026-11-23", range(1200, 1350), labelled=100)
    write_batch_day(spark, layout, DS, range(1350, 1450), labelled=0)
    registry = StandInRegistry(spark, save_untrained_champion(root / "champion.keras"))
    first = run_retraining(spark, cfg, DS, registry=registry)
    decision_bytes = Path(RetrainingFiles(layout.retraining_root).decision).read_bytes()
    second = run_retraining(spark, cfg, DS, registry=registry)
    return {"cfg": cfg, "layout": layout, "first": first, "second": second, "registry": registry,
            "decision_bytes": decision_bytes}


def test_the_decision_file_holds_both_models_on_both_sets(retrained):
    decision = storage.read_json(RetrainingFiles(retrained["layout"].retraining_root).decision)
    assert decision == retrained["first"].details == retrained["registry"].recorded[0]
    assert (decision["ds"], decision["run_id"], decision["trained"]) == (DS, retrained["layout"].run_id, True)
    # The newest labelled day is held out of training (retrain.hold_out_newest), so both figures on it are fair.
    assert decision["newest_batches"] == {"days": ["2026-11-23"], "rows": 100, "in_training_data": False}
    assert decision["training_data"]["origins"] == {"mnist": 600, "2026-11-20": 200}
    assert decision["training_data"]["skipped_days"] == [{"ds": DS, "reason": "no labels.csv yet"}]
    challenger, champion = decision["challenger"], decision["champion"]
    assert (challenger["model"], challenger["version"], champion["version"]) == ("model_1", "2", "1")
    # One epoch on 800 images against an untrained network: the challenger wins on both sets and is promoted.
    assert challenger["test_accuracy"] > 0.5 and champion["test_accuracy"] < 0.3, decision
    assert challenger["newest_batches_accuracy"] > 0.5 and champion["newest_batches_accuracy"] < 0.3, decision
    assert decision["promoted"] is True and decision["reason"] == "meets the target and beats the champion"


def test_the_challenger_trained_on_the_retraining_set_for_the_retrain_epochs(retrained):
    layout = retrained["layout"]
    history = storage.read_json(layout.history("model_1"))
    assert (history["epochs_planned"], history["complete"], history["run_id"]) == (1, True, layout.run_id)
    assert (history["train_rows"], history["validation_rows"]) == (800, 200)
    assert layout.run_id.startswith(f"retrain-{DS}-full-")


def test_the_same_ds_again_is_skipped_without_a_second_decision(retrained, spark):
    layout = retrained["layout"]
    assert retrained["second"].skipped and retrained["second"].details == retrained["first"].details
    assert retrained["registry"].decisions == 1 and len(retrained["registry"].recorded) == 1
    assert Path(RetrainingFiles(layout.retraining_root).decision).read_bytes() == retrained["decision_bytes"]
    assert spark.read.parquet(layout.curated("train")).count() == 800
