"""Keras callbacks of the Horovod workers (imported inside the worker function only: it imports TensorFlow)."""
from __future__ import annotations

import logging
import time

import horovod.tensorflow.keras as hvd
from tensorflow import keras

from pipeline import storage
from pipeline.train import checkpoint, history
from pipeline.train.inputs import RowCounter
from pipeline.train.params import TrainParams

log = logging.getLogger("pipeline.train.worker")


class ValidationWeighting(keras.callbacks.Callback):
    """Scale this rank's val_* metrics by its share of the validation rows, before MetricAverageCallback.

    Horovod averages metrics with equal weight per rank; shards hold whole row groups and can differ in size,
    so each rank pre-multiplies by rows_rank * size / rows_total and the plain average becomes the row-weighted
    mean over the whole validation set.
    """

    def __init__(self, counter: RowCounter):
        super().__init__()
        self.counter = counter

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf
        total = float(hvd.allreduce(tf.constant(float(self.counter.rows)), op=hvd.Sum).numpy())
        share = self.counter.rows * hvd.size() / total if total else 1.0
        for key in [k for k in (logs or {}) if k.startswith("val_")]:
            logs[key] = logs[key] * share


class EpochRecorder(keras.callbacks.Callback):
    """Rank 0 only: after each epoch, checkpoint, append to history.json and log one progress line."""

    def __init__(self, params: TrainParams, base_history: dict):
        super().__init__()
        self.train_params = params  # not `params`: Keras sets that attribute on every callback
        self.history = base_history
        self.started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        p = self.train_params
        record = history.epoch_record(epoch + 1, logs, time.perf_counter() - self.started)
        self.history = history.with_epoch(self.history, record)
        checkpoint.save(self.model, p.checkpoint_dir, epoch + 1, p.fingerprint, self.history["epochs"])
        storage.write_json(p.history_path, self.history)
        log.info("%s epoch %d/%d: loss %.4f acc %.4f val_loss %.4f val_acc %.4f (%.1f s)", p.model,
                 epoch + 1, p.epochs, record["loss"], record["accuracy"], record["val_loss"],
                 record["val_accuracy"], record["seconds"])
