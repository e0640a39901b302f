"""What one model's training run needs, as plain values: the only thing shipped from the driver to the workers.

The driver resolves config, layout and the curated manifest into a `TrainParams`; the Horovod worker function
receives it as a dict of strings and numbers, so nothing Spark- or config-specific is pickled to the executors.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from pipeline.config import ModelConfig, PipelineConfig
from pipeline.fingerprint import fingerprint_of
from pipeline.layout import Layout
from pipeline.paths import as_url


@dataclass(frozen=True)
class TrainParams:
    model: str
    run_id: str
    model_path: str              # paths from the Layout, as plain strings
    history_path: str
    checkpoint_dir: str
    tensorboard_dir: str
    train_url: str
    validation_url: str
    train_rows: int
    validation_rows: int
    num_workers: int
    epochs: int                  # planned in total
    initial_epoch: int           # epochs already completed (resume point)
    end_epoch: int               # this invocation stops after this epoch (== epochs unless stop_after_epochs)
    batch_size: int              # per worker
    learning_rate: float         # for one worker; the workers scale it by their number
    warmup_epochs: int
    seed: int
    tf_threads: int
    reader_workers: int
    reader_queue_size: int
    fingerprint: str
    shuffle_window_rows: int     # train.shuffle_window_rows (0: batches cut from the row groups as they come)
    keep: str = "last"           # the recipe of pipeline.config.ModelConfig
    augment: bool = False
    schedule: str = "constant"
    best_dir: str = ""           # the best epoch's weights (keep == "best")
    tracking: dict | None = None  # the model's live MLflow run for rank 0 (pipeline.tracking.live.attempt_spec)

    @property
    def steps_per_epoch(self) -> int:
        """The same on every rank, whatever its shard holds: ranks taking different step counts hang."""
        return max(1, self.train_rows // (self.batch_size * self.num_workers))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def training_fingerprint(cfg: PipelineConfig, model: str, data_fingerprint: str, num_workers: int) -> str:
    """Everything that shapes a model's weights; a checkpoint is resumed only under the same fingerprint.

    The recipe enters only where it differs from the study's defaults, so that the study's models keep the
    fingerprints (and the trained outputs) they had before per-model recipes existed."""
    t, m = cfg.train, cfg.train.models[model]
    payload = {"model": model, "epochs": m.epochs, "batch_size": batch_size_of(cfg, model),
               "learning_rate": learning_rate_of(cfg, model), "warmup_epochs": t.warmup_epochs, "seed": t.seed,
               "num_workers": num_workers, "data": data_fingerprint}
    if t.shuffle_window_rows:   # the batches' rows; absent when 0, the fingerprints of that order stay as they were
        payload["shuffle_window_rows"] = t.shuffle_window_rows
    recipe = recipe_of(m)
    return fingerprint_of({**payload, "recipe": recipe} if recipe else payload)


def recipe_of(m: ModelConfig) -> dict[str, Any]:
    """The recipe options set away from their defaults (batch size and learning rate are resolved apart)."""
    default = ModelConfig(epochs=m.epochs)
    return {key: getattr(m, key) for key in ("keep", "augment", "schedule") if getattr(m, key) != getattr(default, key)}


def batch_size_of(cfg: PipelineConfig, model: str) -> int:
    return cfg.train.models[model].batch_size or cfg.train.batch_size


def learning_rate_of(cfg: PipelineConfig, model: str) -> float:
    return cfg.train.models[model].learning_rate or cfg.train.learning_rate


def dataset_url(path: str) -> str:
    """Petastorm wants a URL; a plain local path becomes file://."""
    return as_url(path)


def build_params(cfg: PipelineConfig, layout: Layout, model: str, counts: dict[str, int], ranks: tuple[int, int],
                 initial_epoch: int, fingerprint: str) -> TrainParams:
    """`ranks`: (Horovod ranks, TF threads each) as the stage resolved them from config and Spark."""
    t, m = cfg.train, cfg.train.models[model]
    num_workers, tf_threads = ranks
    epochs = m.epochs
    end_epoch = min(epochs, initial_epoch + t.stop_after_epochs) if t.stop_after_epochs > 0 else epochs
    return TrainParams(
        model=model, run_id=layout.run_id, model_path=layout.model_file(model), history_path=layout.history(model),
        checkpoint_dir=layout.checkpoint_dir(model), tensorboard_dir=layout.tensorboard_dir(model),
        train_url=dataset_url(layout.curated("train")), validation_url=dataset_url(layout.curated("validation")),
        train_rows=int(counts["train"]), validation_rows=int(counts["validation"]), num_workers=num_workers,
        epochs=epochs, initial_epoch=initial_epoch, end_epoch=end_epoch, batch_size=batch_size_of(cfg, model),
        learning_rate=learning_rate_of(cfg, model), warmup_epochs=t.warmup_epochs, seed=t.seed,
        tf_threads=tf_threads, reader_workers=t.reader_workers,
        reader_queue_size=t.reader_queue_size, shuffle_window_rows=t.shuffle_window_rows, fingerprint=fingerprint,
        keep=m.keep, augment=m.augment,
        schedule=m.schedule, best_dir=layout.best_checkpoint_dir(model))
