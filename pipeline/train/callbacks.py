"""Keras callbacks of the Horovod workers (imported inside the worker function only: it imports TensorFlow)."""
from __future__ import annotations

import logging
import os
import socket
import time

import horovod.tensorflow.keras as hvd
from tensorflow import keras

from pipeline import storage
from pipeline.train import checkpoint, history
from pipeline.train.inputs import RowCounter
from pipeline.train.params import TrainParams

log = logging.getLogger("pipeline.train.worker")


class ExactValidation(keras.callbacks.Callback):
    """Check that the ranks' validation passes read the whole validation split, and weight their metrics by rows.

    Runs before MetricAverageCallback. Horovod averages metrics with equal weight per rank; shards hold whole row
    groups and can differ in size, so each rank pre-multiplies by rows_rank * size / rows_total and the plain
    average becomes the row-weighted mean over the whole validation set. `val_rows` in the logs is the rows read
    by all ranks together; when it is not the split's size the epoch's metrics are wrong, so training stops on
    every rank at once (they all see the same sum) before the epoch is recorded, and `failure` says why.
    """

    def __init__(self, counter: RowCounter, expected_rows: int):
        super().__init__()
        self.counter = counter
        self.expected_rows = expected_rows
        self.failure: str | None = None

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf
        logs = logs if logs is not None else {}
        total = int(hvd.allreduce(tf.constant(float(self.counter.rows)), op=hvd.Sum, name="val_rows").numpy())
        share = self.counter.rows * hvd.size() / total if total else 1.0
        for key in [k for k in logs if k.startswith("val_")]:
            logs[key] = logs[key] * share
        logs["val_rows"] = total
        if total != self.expected_rows:
            self.failure = (f"epoch {epoch + 1}: the ranks' validation passes read {total} rows, the validation "
                            f"split has {self.expected_rows}")
            self.model.stop_training = True


class AverageMovingStatistics(keras.callbacks.Callback):
    """Average the non-trainable weights (BatchNormalization's moving mean and variance) across ranks.

    Horovod allreduces gradients, so trainable weights agree on every rank; moving statistics are updated from
    each rank's own batches and drift apart. Averaging them before each validation pass means every rank
    validates, checkpoints and (rank 0) saves the same model, and the statistics reflect every shard. The same
    number of allreduces on every rank in the same order, once per epoch: no effect on step time.
    """

    def on_test_begin(self, logs=None):
        if hvd.size() == 1:
            return
        for index, variable in enumerate(self.model.non_trainable_variables):
            variable.assign(hvd.allreduce(variable.numpy(), op=hvd.Average, name=f"moving_statistic_{index}"))


class EpochRecorder(keras.callbacks.Callback):
    """Rank 0 only: after each epoch, checkpoint, append to history.json and log one progress line. It leaves the
    epoch's learning rate and seconds in `logs` for the callbacks after it (TensorBoard, MLflow)."""

    def __init__(self, params: TrainParams, base_history: dict, validation: ExactValidation):
        super().__init__()
        self.train_params = params  # not `params`: Keras sets that attribute on every callback
        self.history = base_history
        self.validation = validation
        self.started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        p = self.train_params
        if self.validation.failure:
            return  # ExactValidation stops training: an epoch with wrong validation metrics is not recorded
        logs["learning_rate"] = float(keras.backend.get_value(self.model.optimizer.learning_rate))
        record = history.epoch_record(epoch + 1, logs, time.perf_counter() - self.started)
        logs["seconds"] = record["seconds"]
        self.history = history.with_epoch(self.history, record)
        checkpoint.save(self.model, p.checkpoint_dir, epoch + 1, p.fingerprint, self.history["epochs"])
        storage.write_json(p.history_path, self.history)
        log.info("%s epoch %d/%d: loss %.4f acc %.4f val_loss %.4f val_acc %.4f (%.1f s)", p.model,
                 epoch + 1, p.epochs, record["loss"], record["accuracy"], record["val_loss"],
                 record["val_accuracy"], record["seconds"])


class KeepBest(keras.callbacks.Callback):
    """Rank 0 only, for a model whose recipe keeps its best epoch: after each epoch whose averaged validation
    accuracy beats every earlier one (ties keep the earlier epoch), publish its weights to `best_dir`. A resumed
    run starts from the best saved under the same fingerprint, so the rule spans every invocation."""

    def __init__(self, params: TrainParams, validation: ExactValidation):
        super().__init__()
        self.train_params = params
        self.validation = validation
        state = checkpoint.read_best_state(params.best_dir, params.fingerprint)
        self.best = float(state["val_accuracy"]) if state else float("-inf")

    def on_epoch_end(self, epoch, logs=None):
        if self.validation.failure or logs is None:
            return
        if float(logs["val_accuracy"]) > self.best:
            self.best = float(logs["val_accuracy"])
            checkpoint.save_best(self.model, self.train_params.best_dir, epoch + 1, self.best,
                                 self.train_params.fingerprint)


class EpochSummaries(keras.callbacks.Callback):
    """Rank 0 only: TensorBoard's epoch curves (loss, accuracy; learning rate under train/) with epochs counted from
    1 as in history.json and MLflow (Keras' own TensorBoard callback counts from 0), so a resumed run continues its
    curves. No graph and no profiler, which would cost time on every run for what history.json already says."""

    def __init__(self, log_dir: str, validation: ExactValidation):
        super().__init__()
        self.log_dir = log_dir
        self.validation = validation
        self.writers = {}

    def on_train_begin(self, logs=None):
        import tensorflow as tf
        self.writers = {split: tf.summary.create_file_writer(os.path.join(self.log_dir, split))
                        for split in ("train", "validation")}

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf
        if self.validation.failure or not logs:
            return
        scalars = {"train": {"epoch_loss": logs["loss"], "epoch_accuracy": logs["accuracy"],
                             "epoch_learning_rate": logs.get("learning_rate")},
                   "validation": {"epoch_loss": logs["val_loss"], "epoch_accuracy": logs["val_accuracy"]}}
        for split, values in scalars.items():
            with self.writers[split].as_default():
                for name, value in values.items():
                    if value is not None:
                        tf.summary.scalar(name, float(value), step=epoch + 1)
            self.writers[split].flush()

    def on_train_end(self, logs=None):
        for writer in self.writers.values():
            writer.close()


class LiveRun(keras.callbacks.Callback):
    """Rank 0 only: the model's MLflow run while it trains (pipeline.tracking.live). Opened (or an unfinished attempt
    reopened) as training starts, with MLflow's system metrics; each epoch's metrics logged as it ends; closed as
    training ends: FINISHED after the last planned epoch, KILLED when stopped early to be resumed (stop_after_epochs),
    FAILED when validation stopped it. A store that cannot be reached is a warning, not a failed training: the
    driver logs every epoch afterwards from history.json."""

    def __init__(self, params: TrainParams, validation: ExactValidation):
        super().__init__()
        self.spec = params.tracking
        self.train_params = params
        self.validation = validation
        self.client = None
        self.run_id = None

    def on_train_begin(self, logs=None):
        self._safely("opening", self._open)

    def _open(self):
        import mlflow

        from pipeline.tracking.live import open_attempt
        local_db = self.spec["uri"].removeprefix("sqlite:///") if self.spec["uri"].startswith("sqlite:///") else None
        if local_db is not None and not os.path.exists(local_db):
            # An executor on another machine than the driver's SQLite file: a client would create a store here.
            raise FileNotFoundError(f"the local store {local_db} is not on this machine ({socket.gethostname()})")
        mlflow.set_tracking_uri(self.spec["uri"])
        mlflow.set_system_metrics_sampling_interval(self.spec["system_metrics_seconds"])
        self.client = mlflow.MlflowClient(self.spec["uri"])
        self.run_id = open_attempt(self.client, self.spec)
        mlflow.start_run(run_id=self.run_id, log_system_metrics=True)

    def on_epoch_end(self, epoch, logs=None):
        if self.run_id is None or self.validation.failure or not logs:
            return
        from pipeline.tracking.live import epoch_metrics
        self._safely("logging an epoch", lambda: self.client.log_batch(self.run_id, epoch_metrics(epoch + 1, logs)))

    def on_train_end(self, logs=None):
        if self.run_id is None:
            return
        import mlflow
        p = self.train_params
        status = ("FAILED" if self.validation.failure else "FINISHED" if p.end_epoch == p.epochs else "KILLED")
        self._safely("closing", lambda: mlflow.end_run(status))

    def _safely(self, doing: str, action) -> None:
        try:
            action()
        except Exception as exc:  # MLflow's and the network's errors alike: tracking must not stop training
            log.warning("MLflow run of %s: %s failed, live logging stops (the driver logs the epochs after "
                        "training): %s", self.train_params.model, doing, str(exc).splitlines()[0][:300])
            self.run_id = None
