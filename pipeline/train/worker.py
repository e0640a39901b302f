"""The function horovod.spark.run ships to every worker, and its steps.

It receives plain values only (a TrainParams dict) and does its imports and hvd.init() inside, like
horovod's own keras/remote.py; unlike that one it stays short by delegating to the helpers below.
"""
from __future__ import annotations

import logging
import os
import resource
import socket
import sys
import tempfile
import time


def train_worker(params_dict: dict) -> dict:
    """Train one model data-parallel; rank 0 checkpoints, logs and saves. Returns this rank's facts."""
    _quiet_tensorflow()
    import horovod.tensorflow.keras as hvd

    from pipeline.train.inputs import RowCounter, open_shard, validation_dataset
    from pipeline.train.params import TrainParams

    params = TrainParams(**params_dict)
    hvd.init()
    _configure_tensorflow(params.tf_threads, params.seed + hvd.rank())
    _configure_logging(hvd.rank())
    model = compiled_model(params, hvd.size())
    if params.initial_epoch > 0:
        from pipeline.train import checkpoint
        checkpoint.restore(model, params.checkpoint_dir)
    counter = RowCounter()
    callbacks = worker_callbacks(params, counter)
    started = time.perf_counter()
    with open_shard(params.train_url, params, hvd.rank(), hvd.size(), repeat=True) as train_reader, \
            open_shard(params.validation_url, params, hvd.rank(), hvd.size(), repeat=False) as val_reader:
        model.fit(training_data(train_reader, params, hvd.rank()), steps_per_epoch=params.steps_per_epoch,
                  validation_data=validation_dataset(val_reader, params.batch_size, counter),
                  initial_epoch=params.initial_epoch, epochs=params.end_epoch,
                  callbacks=callbacks, verbose=0)
    failure = next((c.failure for c in callbacks if getattr(c, "failure", None)), None)
    if hvd.rank() == 0 and params.end_epoch == params.epochs and failure is None:
        save_final_model(model, params, hvd.size())
    return {**rank_report(hvd, model, time.perf_counter() - started, counter.rows), "failure": failure}


def training_data(reader, params, rank: int):
    """This rank's training batches, shuffled across row groups and augmented on the fly when the recipe says so
    (both seeded per rank, so the ranks transform different images differently and a rerun replays the same
    batches and transformations)."""
    from pipeline.train.inputs import training_dataset
    from pipeline.train.recipe import augmented
    batches = training_dataset(reader, params.batch_size, params.shuffle_window_rows, params.seed + rank)
    return augmented(batches, params.seed + rank) if params.augment else batches


def compiled_model(params, size: int):
    """The registered model with Adam at lr x size, wrapped in Horovod's allreducing optimizer when size > 1."""
    import horovod.tensorflow.keras as hvd
    from tensorflow import keras

    from pipeline.train.models import build_model
    model = build_model(params.model)
    optimizer = keras.optimizers.Adam(learning_rate=params.learning_rate * size)
    if size > 1:
        # Only when there is something to reduce: at size 1 Horovod's per-step negotiation alone took model_1
        # from 10.9 to 18.6 ms a step here (benchmarks/README.md).
        optimizer = hvd.DistributedOptimizer(optimizer)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def worker_callbacks(params, counter) -> list:
    """Order matters: weights broadcast from rank 0, moving statistics averaged before validation, validation
    checked and weighted before the metric average, then the warm-up and the schedule that takes over after it;
    only rank 0 records (best epoch, checkpoint, history, log, TensorBoard, the live MLflow run), last, so that it
    records what every rank agrees on."""
    import horovod.tensorflow.keras as hvd

    from pipeline.train import history
    from pipeline.train.callbacks import (
        AverageMovingStatistics,
        EpochRecorder,
        EpochSummaries,
        ExactValidation,
        KeepBest,
        LiveRun,
    )
    validation = ExactValidation(counter, params.validation_rows)
    callbacks = [AverageMovingStatistics(), validation, hvd.callbacks.MetricAverageCallback()]
    if hvd.size() > 1:
        # Broadcast and warm-up have batch hooks (Python on every step); at one rank they change nothing.
        callbacks = [hvd.callbacks.BroadcastGlobalVariablesCallback(0), *callbacks,
                     hvd.callbacks.LearningRateWarmupCallback(
                         initial_lr=params.learning_rate * hvd.size(), warmup_epochs=params.warmup_epochs,
                         steps_per_epoch=params.steps_per_epoch, verbose=0)]
    if params.schedule == "cosine":
        from pipeline.train.recipe import cosine_schedule_callback
        callbacks.append(cosine_schedule_callback(params.learning_rate * hvd.size(), params.warmup_epochs,
                                                  params.epochs, params.steps_per_epoch))
    if hvd.rank() == 0:
        if params.keep == "best":
            callbacks.append(KeepBest(params, validation))
        callbacks += [EpochRecorder(params, history.read(params.history_path), validation),
                      EpochSummaries(params.tensorboard_dir, validation)]
        if params.tracking:
            callbacks.append(LiveRun(params, validation))
    return callbacks


def save_final_model(model, params, size: int) -> None:
    """model.keras without Horovod: the kept epoch's weights (the last, or the best one's when the recipe keeps
    its best) in a fresh model compiled with plain Adam, so evaluation and prediction load it with
    keras.models.load_model alone; no augmentation and no schedule in it."""
    from tensorflow import keras

    from pipeline import storage
    from pipeline.train import checkpoint
    from pipeline.train.models import build_model
    final = build_model(params.model)
    if params.keep == "best":
        checkpoint.restore_best(final, params.best_dir)
    else:
        final.set_weights(model.get_weights())
    final.compile(optimizer=keras.optimizers.Adam(learning_rate=params.learning_rate * size),
                  loss="categorical_crossentropy", metrics=["accuracy"])
    with tempfile.TemporaryDirectory() as tmp:  # Keras saves to a local file; storage copies it anywhere
        local = os.path.join(tmp, os.path.basename(params.model_path))  # Keras picks the format by the suffix
        final.save(local)
        with open(local, "rb") as src:
            storage.write_bytes(params.model_path, src.read())


def rank_report(hvd, model, seconds: float, validation_rows: int) -> dict:
    """What the driver learns from each rank: who it was, its peak memory, and weight checksums, trainable and
    non-trainable apart (equal on every rank: gradients allreduced from broadcast initial weights, moving
    statistics averaged)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"rank": hvd.rank(), "size": hvd.size(), "hostname": socket.gethostname(), "pid": os.getpid(),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
            "seconds": round(seconds, 3), "validation_rows": validation_rows,
            "trainable_checksum": _checksum(model.trainable_weights),
            "non_trainable_checksum": _checksum(model.non_trainable_weights)}


def _checksum(variables) -> float:
    import numpy as np
    return float(sum(np.abs(v.numpy()).sum(dtype=np.float64) for v in variables))


def _quiet_tensorflow() -> None:
    import warnings
    warnings.filterwarnings("ignore", category=FutureWarning)  # petastorm on pyarrow 10: deprecation noise
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def _configure_tensorflow(threads: int, seed: int) -> None:
    """Threads per worker so that workers x threads <= cores: oversubscribed cores slow every rank down."""
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    tf.keras.utils.set_random_seed(seed)


def _configure_logging(rank: int) -> None:
    """Rank 0 logs progress to stdout, which horovod.spark.run forwards to the driver."""
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("absl", "tensorflow", "petastorm"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
