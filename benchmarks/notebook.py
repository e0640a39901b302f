"""The whole of `make run` written as one notebook would: the yardstick of the end-to-end benchmark.

One Python process, no Spark, no Horovod, no checks beyond what a notebook does: read the IDX files with NumPy,
scale to [0, 1], split the training images 54,000 / 6,000 (stratified, seeded), fit every model of the profile
with `model.fit` for the same epochs and the same recipe, evaluate each on the 10,000 test images, predict the
test set with the best one and write the predictions to Parquet. Only the model definitions come from the
pipeline (they are the thing being trained). `make bench` runs this and `make run` side by side, each from a
fresh process, and compares their wall times.

    python benchmarks/notebook.py --profile full --out output/bench/notebook
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

STARTED = time.perf_counter()   # the process's own start: imports count, as they do for `make run`

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:          # `python benchmarks/notebook.py` puts benchmarks/, not the repo, on the path
    sys.path.insert(0, str(REPO))

from benchmarks.baselines import one_hot, read_idx_chunks  # noqa: E402


def load_split(input_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All images of a split as (n, 28, 28, 1) float32 in [0, 1], and their labels."""
    chunks = list(read_idx_chunks(input_dir, split))
    images = np.concatenate([c[1] for c in chunks]).astype(np.float32) / 255.0
    labels = np.concatenate([c[2] for c in chunks]).astype(np.int64)
    return images.reshape(-1, 28, 28, 1), labels


def stratified_split(labels: np.ndarray, validation_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of train and validation, each class sending its share of `validation_size` to validation."""
    rng = np.random.default_rng(seed)
    validation = []
    for digit in range(10):
        members = rng.permutation(np.flatnonzero(labels == digit))
        validation.append(members[:round(validation_size * len(members) / len(labels))])
    held = np.zeros(len(labels), dtype=bool)
    held[np.concatenate(validation)] = True
    return np.flatnonzero(~held), np.flatnonzero(held)


def subset(rows: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A stratified `fraction` of `rows` (the quick profile's subset); all of them at 1.0."""
    if fraction >= 1.0:
        return rows
    rng = np.random.default_rng(seed)
    kept = [rng.permutation(rows[labels[rows] == digit])[:round(fraction * np.sum(labels[rows] == digit))]
            for digit in range(10)]
    return np.sort(np.concatenate(kept))


def fit(name: str, epochs: int, train: tuple, validation: tuple, batch_size: int, learning_rate: float, seed: int):
    import tensorflow as tf

    from pipeline.train.models import build_model
    tf.keras.utils.set_random_seed(seed)
    model = build_model(name)
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(train[0], one_hot(train[1]), batch_size=batch_size, epochs=epochs, shuffle=True,
              validation_data=(validation[0], one_hot(validation[1])), verbose=0)
    return model


def run(profile: str, out: Path) -> dict:
    from pipeline.config import load_config
    cfg = load_config(REPO / "conf" / "local.yaml", profile)
    input_dir = Path(cfg.paths.input)
    out.mkdir(parents=True, exist_ok=True)
    x, y = load_split(input_dir, "train")
    x_test, y_test = load_split(input_dir, "test")
    size = cfg.prepare.validation_size
    train_rows, validation_rows = stratified_split(y, int(size if size >= 1 else round(size * len(y))),
                                                   cfg.prepare.seed)
    fraction, seed = cfg.prepare.subset_fraction, cfg.prepare.seed
    train_rows, validation_rows = subset(train_rows, y, fraction, seed), subset(validation_rows, y, fraction, seed)
    test_rows = subset(np.arange(len(y_test)), y_test, fraction, seed)
    x_test, y_test = x_test[test_rows], y_test[test_rows]
    train, validation = (x[train_rows], y[train_rows]), (x[validation_rows], y[validation_rows])
    accuracy, models = {}, {}
    for name, model_cfg in cfg.train.models.items():
        model = fit(name, model_cfg.epochs, train, validation, cfg.train.batch_size, cfg.train.learning_rate,
                    cfg.train.seed)
        accuracy[name] = float(model.evaluate(x_test, one_hot(y_test), batch_size=1024, verbose=0)[1])
        model.save(out / f"{name}.keras")
        models[name] = model
    best = max(accuracy, key=accuracy.get)
    probabilities = models[best].predict(x_test, batch_size=1024, verbose=0)
    pq.write_table(pa.table({"label": y_test, "prediction": probabilities.argmax(axis=1),
                             "probabilities": list(probabilities)}), out / "predictions.parquet")
    return {"test_accuracy": accuracy, "best": best, "train_rows": len(train_rows),
            "validation_rows": len(validation_rows), "test_rows": len(y_test),
            "seconds": round(time.perf_counter() - STARTED, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="full")
    parser.add_argument("--out", type=Path, required=True, help="folder for the models and predictions")
    args = parser.parse_args()
    print(json.dumps(run(args.profile, args.out)))


if __name__ == "__main__":
    main()
