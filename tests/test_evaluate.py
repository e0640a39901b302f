"""Evaluation: the overfitting gap, the Spark aggregation, and the stage end to end on a small real model (with the
gate and the model-file check)."""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql.types import ArrayType, FloatType, IntegerType, StringType, StructField, StructType

from pipeline.errors import GateError, PipelineError
from pipeline.evaluate.stage import run_evaluation, train_val_gap
from pipeline.layout import Layout
from pipeline.scoring import confusion_and_loss


def test_train_val_gap_is_taken_at_the_kept_epoch():
    history = {"epochs": [{"epoch": 1, "loss": 0.5, "accuracy": 0.85, "val_loss": 0.4, "val_accuracy": 0.88},
                          {"epoch": 2, "loss": 0.10, "accuracy": 0.97, "val_loss": 0.16, "val_accuracy": 0.955}]}
    gap = train_val_gap(history)
    assert gap == {"accuracy": pytest.approx(0.015), "loss": pytest.approx(0.06), "epoch": 2}
    assert train_val_gap({"epochs": []}) == {"accuracy": None, "loss": None, "epoch": None}
    best_first = {**history, "keep": "best", "kept_epoch": 1}    # the saved model holds epoch 1: its gap
    assert train_val_gap(best_first) == {"accuracy": pytest.approx(-0.03), "loss": pytest.approx(-0.1), "epoch": 1}


def test_spark_aggregation_gives_the_matrix_and_the_mean_cross_entropy(spark):
    schema = StructType([StructField("label", IntegerType()), StructField("prediction", IntegerType()),
                         StructField("probabilities", ArrayType(FloatType())), StructField("record_id", StringType())])
    rows = [(0, 0, [0.5, 0.5, 0.0], "a"), (1, 0, [0.75, 0.25, 0.0], "b"), (2, 2, [0.0, 0.0, 1.0], "c"),
            (1, 0, [1.0, 0.0, 0.0], "d")]  # p(true) = 0: clipped to 1e-7 like Keras
    matrix, loss = confusion_and_loss(spark.createDataFrame(rows, schema), 3)
    assert matrix.tolist() == [[1, 0, 0], [2, 0, 0], [0, 0, 1]]
    assert loss == pytest.approx((math.log(2) + math.log(4) + 0.0 - math.log(1e-7)) / 4, rel=1e-6)


def _history(name: str, val_accuracy: float) -> dict:
    return {"model": name, "run_id": "test", "epochs_planned": 2, "epochs_completed": 2, "num_workers": 2,
            "batch_size_per_worker": 32, "learning_rate": 0.001, "params": 693962, "layers": [],
            "epochs": [{"epoch": 1, "loss": 0.6, "accuracy": 0.8, "val_loss": 0.4, "val_accuracy": 0.85,
                        "seconds": 3.0},
                       {"epoch": 2, "loss": 0.25, "accuracy": 0.93, "val_loss": 0.3, "val_accuracy": val_accuracy,
                        "seconds": 2.5}],
            "total_seconds": 5.5, "peak_rss_mb_per_worker": [812.0, 790.5], "resumed_from_epoch": None,
            "complete": True}


@pytest.fixture(scope="module")
def evaluated_run(spark, small_mnist_model, small_curated_test_set, tmp_path_factory):
    """A run folder with a trained model_1, an untrained model_2, no model_3; evaluated once (target 0.5)."""
    from pipeline.config import load_config
    root = tmp_path_factory.mktemp("evaluate")
    cfg = load_config(None, "full", [f"paths.data={root / 'data'}", f"paths.runs={root / 'runs'}",
                                     "tracking.enabled=false", "evaluate.target_accuracy=0.5",
                                     "evaluate.misclassified_examples=10", "predict.batch_size=128"])
    layout = Layout.from_config(cfg, "run")
    shutil.copytree(small_curated_test_set, layout.curated("test"))
    for name, model, val_accuracy in (("model_1", "trained", 0.9), ("model_2", "untrained", 0.1)):
        Path(layout.model_dir(name)).mkdir(parents=True)
        shutil.copy(small_mnist_model[model], layout.model_file(name))
        Path(layout.history(name)).write_text(json.dumps(_history(name, val_accuracy)))
    result = run_evaluation(spark, cfg, layout)
    assert result.skipped is False and result.outputs == {"evaluation": layout.evaluation}
    return cfg, layout, result.details


def test_evaluation_matches_the_models_own_predictions(evaluated_run, small_mnist_model):
    cfg, layout, summary = evaluated_run
    probabilities, labels = small_mnist_model["probabilities"], small_mnist_model["labels"]
    expected_accuracy = float((probabilities.argmax(axis=1) == labels).mean())
    expected_loss = float(-np.log(np.maximum(probabilities[np.arange(len(labels)), labels], 1e-7)).mean())
    metrics = json.loads(Path(layout.evaluation_files.metrics("model_1")).read_text())
    assert metrics["test_accuracy"] == pytest.approx(expected_accuracy, abs=1e-9)
    assert metrics["test_loss"] == pytest.approx(expected_loss, rel=1e-4)
    assert sum(c["support"] for c in metrics["per_class"]) == 1000
    assert metrics["train_val_gap"] == {"accuracy": pytest.approx(0.03), "loss": pytest.approx(0.05), "epoch": 2}
    matrix = np.loadtxt(layout.evaluation_files.confusion_matrix_csv("model_1"), delimiter=",", skiprows=1)[:, 1:]
    assert matrix.sum() == 1000 and np.trace(matrix) == round(expected_accuracy * 1000)
    assert summary["best_model"] == "model_1"
    assert set(summary["models"]) == {"model_1", "model_2"}  # model_3 was never trained: left out


def test_evaluation_writes_figures_comparison_and_best_model(evaluated_run, small_mnist_model):
    _, layout, summary = evaluated_run
    files = layout.evaluation_files
    for name in ("model_1", "model_2"):
        for figure in (files.confusion_matrix_png(name), files.misclassified_png(name)):
            assert Path(figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = json.loads(Path(files.best_model).read_text())
    assert best == {"model": "model_1", "model_path": layout.model_file("model_1"),
                    "test_accuracy": summary["best_test_accuracy"]}
    comparison = json.loads(Path(files.comparison).read_text())
    row = comparison["models"][0]
    assert (row["model"], row["params"], row["epochs"], row["training_seconds"], row["peak_rss_mb_per_worker"],
            row["keep"], row["kept_epoch"], row["final_val_accuracy"]) == ("model_1", 693962, 2, 5.5, 812.0, "last", 2,
                                                                           0.9)
    table = Path(files.comparison_table).read_text().splitlines()
    assert table[0].startswith("| Model | Parameters | Epochs | Training time (s) | Peak memory per worker (MB)")
    assert table[2].startswith("| **model_1** | 693,962 | 2 | 5.5 | 812 | 2 | 0.9000 |")


def test_a_second_run_is_skipped_and_the_gate_fails_above_the_achieved_accuracy(evaluated_run, spark):
    cfg, layout, summary = evaluated_run
    again = run_evaluation(spark, cfg, layout)
    assert again.skipped is True and again.details["best_test_accuracy"] == summary["best_test_accuracy"]
    strict = dataclasses.replace(cfg, evaluate=dataclasses.replace(cfg.evaluate, target_accuracy=0.99))
    achieved = f"{summary['best_test_accuracy']:.4f}"
    with pytest.raises(GateError, match=rf"best model model_1 reaches test accuracy {achieved}, below the target "
                                        r"0\.9900"):
        run_evaluation(spark, strict, layout, force=True)
    assert Path(layout.evaluation_files.best_model).exists()  # outputs stay for the post-mortem


def test_no_trained_model_is_a_clear_error(spark, make_config):
    cfg = make_config()
    with pytest.raises(PipelineError, match=r"no trained model under .*/train \(looked for model_1, model_2, "
                                            r"model_3\): run jobs/train.py first"):
        run_evaluation(spark, cfg, Layout.from_config(cfg, "empty"))


def test_a_tampered_model_file_is_refused_in_one_line_before_any_output(spark, make_config, tmp_path):
    cfg = make_config()
    layout = Layout.from_config(cfg, "tampered")
    Path(layout.model_dir("model_1")).mkdir(parents=True)
    Path(layout.model_file("model_1")).write_bytes(b"not a zip archive")
    Path(layout.history("model_1")).write_text(json.dumps(_history("model_1", 0.9)))
    with pytest.raises(PipelineError, match=r"^model .*/train/model_1/model\.keras refused: not a valid \.keras "
                                            r"file \(not a readable zip archive\)$") as refused:
        run_evaluation(spark, cfg, layout)
    assert "\n" not in str(refused.value) and not Path(layout.evaluation).exists()
