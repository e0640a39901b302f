"""The per-epoch checkpoint: weights, optimizer state (slots, step count, learning rate) and the epochs so far.

Written by rank 0 after every completed epoch into a temporary folder moved into place in one step, so a run
killed mid-write leaves the previous epoch's checkpoint intact. `state.json` holds the epoch number and the
epoch records, so a resumed run's history is exactly the checkpointed epochs (never ahead, never behind).
"""
from __future__ import annotations

from pipeline import outputs, storage
from pipeline.layout import CheckpointFiles


def read_state(checkpoint_dir: str) -> dict | None:
    """{"epoch": completed epochs, "fingerprint", "epochs": [records]} or None when there is no checkpoint."""
    return storage.read_json_if_valid(CheckpointFiles(checkpoint_dir).state)


def save(model, checkpoint_dir: str, epoch: int, fingerprint: str, epochs: list[dict]) -> None:
    import tensorflow as tf
    with outputs.publishing(checkpoint_dir) as tmp_dir:
        storage.makedirs(tmp_dir)
        tmp = CheckpointFiles(tmp_dir)
        tf.train.Checkpoint(model=model, optimizer=model.optimizer).write(tmp.weights)
        storage.write_json(tmp.state, {"epoch": epoch, "fingerprint": fingerprint, "epochs": epochs})


def restore(model, checkpoint_dir: str) -> None:
    """Load weights and optimizer state into a compiled `model` (its optimizer is built first so every slot
    variable exists and is restored now rather than deferred)."""
    import tensorflow as tf
    model.optimizer.build(model.trainable_variables)
    status = tf.train.Checkpoint(model=model, optimizer=model.optimizer).read(CheckpointFiles(checkpoint_dir).weights)
    status.assert_existing_objects_matched()


def save_best(model, best_dir: str, epoch: int, val_accuracy: float, fingerprint: str) -> None:
    """The weights of a new best epoch (a model keeping its best epoch), published like the checkpoint."""
    import tensorflow as tf
    with outputs.publishing(best_dir) as tmp_dir:
        storage.makedirs(tmp_dir)
        tmp = CheckpointFiles(tmp_dir)
        tf.train.Checkpoint(model=model).write(tmp.weights)
        storage.write_json(tmp.state, {"epoch": epoch, "val_accuracy": val_accuracy, "fingerprint": fingerprint})


def read_best_state(best_dir: str, fingerprint: str) -> dict | None:
    """{"epoch", "val_accuracy", "fingerprint"} of the best epoch saved under `fingerprint`, else None."""
    state = storage.read_json_if_valid(CheckpointFiles(best_dir).state)
    return state if state and state.get("fingerprint") == fingerprint else None


def restore_best(model, best_dir: str) -> None:
    """Load the best epoch's weights (trainable and moving statistics) into `model`, optimizer state aside."""
    import tensorflow as tf
    tf.train.Checkpoint(model=model).read(CheckpointFiles(best_dir).weights).assert_existing_objects_matched()
