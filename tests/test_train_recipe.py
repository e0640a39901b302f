"""A model's training recipe: the cosine learning rate, augmentation of training batches only, keeping the best
validation epoch, and the recipe in the training fingerprint. TensorFlow and Horovod run in a child process, as in
test_train.py, so this process never imports them."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from pipeline.config import REPO_ROOT, load_config
from pipeline.kept_epoch import describe_kept, kept_record
from pipeline.train.history import with_kept_epoch
from pipeline.train.params import training_fingerprint
from pipeline.train.recipe import cosine_learning_rate

LOCAL = REPO_ROOT / "conf" / "local.yaml"


def run_child(script: str, *args: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2",
                              "PYTHONPATH": str(REPO_ROOT)})
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip().splitlines()


def test_cosine_learning_rate_leaves_the_warm_up_alone_then_falls_from_the_peak_to_zero():
    steps = dict(warmup_steps=10, total_steps=110, peak=0.002)
    assert [cosine_learning_rate(s, **steps) for s in (0, 9)] == [None, None]
    assert cosine_learning_rate(10, **steps) == pytest.approx(0.002)
    assert cosine_learning_rate(35, **steps) == pytest.approx(0.002 * (1 + math.cos(math.pi / 4)) / 2)
    assert cosine_learning_rate(60, **steps) == pytest.approx(0.001)
    assert cosine_learning_rate(110, **steps) == pytest.approx(0.0)
    assert cosine_learning_rate(500, **steps) == pytest.approx(0.0)   # past the end: stays at the bottom
    falling = [cosine_learning_rate(s, **steps) for s in range(10, 111)]
    assert all(a > b for a, b in zip(falling, falling[1:], strict=False))


def test_without_warm_up_the_schedule_starts_at_the_first_step():
    assert cosine_learning_rate(0, warmup_steps=0, total_steps=4, peak=1.0) == pytest.approx(1.0)
    assert cosine_learning_rate(2, warmup_steps=0, total_steps=4, peak=1.0) == pytest.approx(0.5)


def test_the_recipe_and_the_shuffle_window_enter_the_fingerprint():
    cfg = load_config(LOCAL)
    base = training_fingerprint(cfg, "model_4", "data", 2)
    m4 = cfg.train.models["model_4"]   # each key switched away from the configured recipe, whatever that is
    other = {"augment": str(not m4.augment).lower(), "schedule": "constant" if m4.schedule == "cosine" else "cosine",
             "keep": "last" if m4.keep == "best" else "best", "batch_size": m4.batch_size // 2 or 64,
             "learning_rate": m4.learning_rate / 2 or 0.001}
    for override in (f"{key}={value}" for key, value in other.items()):
        changed = load_config(LOCAL, overrides=[f"train.models.model_4.{override}"])
        assert training_fingerprint(changed, "model_4", "data", 2) != base, override
    from pipeline.fingerprint import fingerprint_of
    study = {"model": "model_3", "epochs": 12, "batch_size": 32, "learning_rate": 0.001, "warmup_epochs": 1,
             "seed": 42, "num_workers": 2, "data": "data"}   # the payload before recipes existed
    assert training_fingerprint(cfg, "model_3", "data", 2) == fingerprint_of({**study, "shuffle_window_rows": 60_000})
    # Batches cut from one row group at a time (shuffle window 0) are the order those fingerprints were made for.
    unshuffled = load_config(LOCAL, overrides=["train.shuffle_window_rows=0"])
    assert training_fingerprint(unshuffled, "model_3", "data", 2) == fingerprint_of(study)


def _history(keep: str, accuracies: list[float]) -> dict:
    epochs = [{"epoch": i + 1, "accuracy": a, "val_accuracy": a} for i, a in enumerate(accuracies)]
    return {"keep": keep, "epochs": epochs, "epochs_completed": len(epochs), "kept_epoch": None}


def test_history_records_the_kept_epoch_by_its_rule():
    best = with_kept_epoch(_history("best", [0.9, 0.95, 0.93]), best_epoch=2)
    assert (best["kept_epoch"], kept_record(best)["val_accuracy"], describe_kept(best)) == \
        (2, 0.95, "best validation epoch (2 of 3)")
    last = with_kept_epoch(_history("last", [0.9, 0.95, 0.93]), best_epoch=None)
    assert (last["kept_epoch"], kept_record(last)["val_accuracy"], describe_kept(last)) == \
        (3, 0.93, "last epoch (3 of 3)")
    older = {"epochs": [{"epoch": 1, "val_accuracy": 0.8}], "epochs_completed": 1}   # before the rule was recorded
    assert (kept_record(older)["epoch"], describe_kept(older)) == (1, "last epoch (1 of 1)")


_KEEP_BEST = """
import json, sys
import numpy as np
import horovod.tensorflow.keras as hvd
from tensorflow import keras
from pipeline.train.callbacks import ExactValidation, KeepBest
from pipeline.train.inputs import RowCounter
from pipeline.train.models import build_model
from pipeline.train.params import TrainParams
from pipeline.train.worker import save_final_model
hvd.init()
tmp = sys.argv[1]
params = TrainParams(model="model_1", run_id="r", model_path=f"{tmp}/model.keras", history_path=f"{tmp}/h.json",
                     checkpoint_dir=f"{tmp}/checkpoint", tensorboard_dir=f"{tmp}/tb", train_url="", validation_url="",
                     train_rows=10, validation_rows=10, num_workers=1, epochs=3, initial_epoch=0, end_epoch=3,
                     batch_size=2, learning_rate=0.001, warmup_epochs=0, seed=1, tf_threads=1, reader_workers=1,
                     reader_queue_size=1, fingerprint="f", shuffle_window_rows=0, keep="best",
                     best_dir=f"{tmp}/best-epoch")
model = build_model("model_1")
keep = KeepBest(params, ExactValidation(RowCounter(), 10))
keep.set_model(model)
weights = {}
for epoch, val in enumerate([0.90, 0.97, 0.95]):
    model.set_weights([np.full(w.shape, epoch + 1, w.dtype) for w in model.get_weights()])
    weights[epoch + 1] = model.get_weights()
    keep.on_epoch_end(epoch, {"val_accuracy": val})
save_final_model(model, params, 1)
saved = keras.models.load_model(f"{tmp}/model.keras", safe_mode=True)
kept = [e for e in (1, 2, 3) if all(np.array_equal(a, b) for a, b in zip(saved.get_weights(), weights[e]))]
print(json.dumps({"kept": kept, "state": json.load(open(f"{tmp}/best-epoch/state.json")),
                  "layers": [type(layer).__name__ for layer in saved.layers]}))
"""


def test_keep_best_saves_the_best_validation_epoch_not_the_last(tmp_path):
    """Epoch 2 has the best validation accuracy: model.keras holds epoch 2's weights and the state says so."""
    result = json.loads(run_child(_KEEP_BEST, str(tmp_path))[-1])
    assert result["kept"] == [2]
    assert result["state"] == {"epoch": 2, "val_accuracy": 0.97, "fingerprint": "f"}
    assert result["layers"] == ["Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dense"]   # a plain Keras model


_AUGMENT = """
import json
import numpy as np
import tensorflow as tf
from pipeline.train.recipe import augmented
rng = np.random.default_rng(0)
images = np.zeros((16, 28, 28, 1), np.float32)
images[:, 8:20, 10:18, 0] = rng.uniform(0.5, 1.0, (16, 12, 8))   # a digit-like blob inside the frame
labels = np.eye(10, dtype=np.float32)[np.arange(16) % 10]
plain = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
def collect(dataset):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.concatenate(xs), np.concatenate(ys)
x1, y1 = collect(augmented(plain, seed=7))
x2, _ = collect(augmented(plain, seed=7))
x3, _ = collect(augmented(plain, seed=8))
x0, y0 = collect(plain)
print(json.dumps({"shape": list(x1.shape), "dtype": str(x1.dtype), "labels_equal": bool((y1 == labels).all()),
                  "changed": int((np.abs(x1 - images).reshape(16, -1).max(axis=1) > 1e-3).sum()),
                  "replayed": bool(np.allclose(x1, x2)), "other_seed_differs": bool(not np.allclose(x1, x3)),
                  "range": [float(x1.min()), float(x1.max())],
                  "plain_untouched": bool((x0 == images).all() and (y0 == labels).all())}))
"""


def test_augmentation_moves_pixels_keeps_shapes_and_labels_and_replays_by_seed():
    result = json.loads(run_child(_AUGMENT)[-1])
    assert result["shape"] == [16, 28, 28, 1] and result["dtype"] == "float32"
    assert result["labels_equal"] and result["plain_untouched"]
    assert result["changed"] == 16                       # every image transformed
    assert result["replayed"] and result["other_seed_differs"]
    assert result["range"][0] >= 0.0 and result["range"][1] <= 1.0 + 1e-6


_VALIDATION_PLAIN = """
import json
from collections import namedtuple
import numpy as np
from pipeline.train.inputs import RowCounter, validation_dataset
from pipeline.train.params import TrainParams
from pipeline.train.worker import training_data
Group = namedtuple("Group", "image label")
rng = np.random.default_rng(1)
images = np.zeros((8, 784), np.float32)
images.reshape(8, 28, 28)[:, 8:20, 10:18] = rng.uniform(0.5, 1.0, (8, 12, 8))
labels = np.arange(8) % 10
class Reader:
    last_row_consumed = False
    def __iter__(self):
        return iter([Group(images, labels)])
fields = dict(model="model_4", run_id="r", model_path="", history_path="", checkpoint_dir="", tensorboard_dir="",
              train_url="", validation_url="", train_rows=8, validation_rows=8, num_workers=1, epochs=1,
              initial_epoch=0, end_epoch=1, batch_size=8, learning_rate=0.001, warmup_epochs=0, seed=3, tf_threads=1,
              reader_workers=1, reader_queue_size=1, fingerprint="f", shuffle_window_rows=0, schedule="cosine",
              keep="best")
def first_batch(dataset):
    x, y = next(iter(dataset))
    return x.numpy().reshape(8, 784), y.numpy().argmax(axis=1)
on, on_labels = first_batch(training_data(Reader(), TrainParams(**fields, augment=True), rank=0))
off, _ = first_batch(training_data(Reader(), TrainParams(**fields, augment=False), rank=0))
val, val_labels = first_batch(validation_dataset(Reader(), 8, RowCounter()))
print(json.dumps({"training_augmented": bool(not np.allclose(on, images)), "labels": on_labels.tolist(),
                  "off_is_plain": bool(np.array_equal(off, images)),
                  "validation_is_plain": bool(np.array_equal(val, images)), "val_labels": val_labels.tolist()}))
"""


def test_the_worker_augments_training_batches_only_and_only_when_the_recipe_says_so():
    result = json.loads(run_child(_VALIDATION_PLAIN)[-1])
    assert result["training_augmented"] and result["off_is_plain"] and result["validation_is_plain"]
    assert result["labels"] == result["val_labels"] == [0, 1, 2, 3, 4, 5, 6, 7]
