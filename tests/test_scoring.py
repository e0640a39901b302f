"""Distributed scoring (shared by evaluation and prediction): the model's own predictions over many tasks and
batches, and one model load per Python worker, not per batch."""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline import scoring
from pipeline.scoring import score_images, set_arrow_batch_rows


def test_scoring_over_many_tasks_and_batches_equals_the_models_own_predict(spark, small_mnist_model,
                                                                           small_curated_test_set):
    set_arrow_batch_rows(spark, 50)
    images = spark.read.parquet(small_curated_test_set).repartition(8)
    scored = score_images(images, small_mnist_model["trained"], batch_size=20).collect()  # 8 tasks, 20+ batches
    assert len(scored) == 1000
    by_index = {int(r["record_id"].split(":")[1]): r for r in scored}
    reference = small_mnist_model["probabilities"]
    assert [by_index[i]["prediction"] for i in range(1000)] == reference.argmax(axis=1).tolist()
    np.testing.assert_allclose(np.array([by_index[i]["probabilities"] for i in range(1000)]), reference, atol=1e-5)


class _StandInModel:
    """Predicts class 3 for every image."""

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        return np.tile(np.eye(10, dtype=np.float32)[3], (len(x), 1))


def test_a_python_worker_loads_the_model_once_not_per_batch(monkeypatch):
    """What every Python worker runs, here in this process with a stand-in for the Keras loader (the pytest process
    never imports TensorFlow): two tasks of three Arrow batches each load the model once; scoring with another
    model replaces it, and an empty partition loads nothing."""
    loads = []

    def load(model_path: str, tf_threads: int) -> _StandInModel:
        loads.append(model_path)
        return _StandInModel()

    monkeypatch.setattr(scoring, "_MODEL_CACHE", {})
    monkeypatch.setattr(scoring, "_load_model", load)

    def task(model_path: str, batches: int = 3) -> list[pd.DataFrame]:
        arrow_batches = (pd.DataFrame({"record_id": [f"r{i}" for i in range(5)],
                                       "image": [np.zeros(784, np.float32)] * 5}) for _ in range(batches))
        return list(scoring.score_batches(arrow_batches, model_path, 2, 1, ["record_id"]))

    for _ in range(2):
        out = task("a.keras")
        assert [len(chunk) for chunk in out] == [2, 2, 1] * 3        # batch_size rows per model call
        assert all((chunk["prediction"] == 3).all() for chunk in out)
    assert loads == ["a.keras"]
    task("b.keras")
    task("a.keras")
    assert task("c.keras", batches=0) == []
    assert loads == ["a.keras", "b.keras", "a.keras"]                 # one model kept at a time
