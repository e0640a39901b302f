"""The worker's input pipeline and history records, without Horovod: row groups to batches, one-hot labels."""
from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest

from pipeline.train import history
from pipeline.train.inputs import rebatch, to_model_inputs

Group = namedtuple("Group", ["image", "label"])


def groups(*sizes: int) -> list[Group]:
    """Row groups whose pixel values encode the global row number, so order and carry-over are visible."""
    out, start = [], 0
    for size in sizes:
        rows = np.arange(start, start + size)
        out.append(Group(np.repeat(rows[:, None], 784, axis=1).astype(np.float32) / 1000, rows % 10))
        start += size
    return out


def test_to_model_inputs_reshapes_and_one_hot_encodes():
    x, y = to_model_inputs(np.arange(2 * 784, dtype=np.float32).reshape(2, 784) / 2000, np.array([3, 0]))
    assert x.shape == (2, 28, 28, 1) and x.dtype == np.float32
    assert x[1, 0, 0, 0] == pytest.approx(784 / 2000) and x[0, 0, 1, 0] == pytest.approx(1 / 2000)
    np.testing.assert_array_equal(y, [[0, 0, 0, 1, 0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]])


def test_rebatch_carries_rows_across_row_groups_and_drops_the_remainder_for_training():
    batches = list(rebatch(iter(groups(5, 7, 2)), batch_size=4, drop_remainder=True))
    assert [len(x) for x, _ in batches] == [4, 4, 4]   # 14 rows: 3 full batches, 2 rows dropped
    rows = np.concatenate([x[:, 0, 0, 0] for x, _ in batches]) * 1000
    np.testing.assert_allclose(rows, np.arange(12), atol=1e-3)
    np.testing.assert_array_equal(np.concatenate([y.argmax(1) for _, y in batches]), np.arange(12) % 10)


def test_rebatch_keeps_every_row_for_validation():
    batches = list(rebatch(iter(groups(5, 6)), batch_size=4, drop_remainder=False))
    assert [len(x) for x, _ in batches] == [4, 4, 3]


def test_history_epochs_are_replaced_not_duplicated():
    base = {"epochs": [], "epochs_completed": 0, "epochs_planned": 2, "total_seconds": 10.0}
    logs = {"loss": 0.5, "accuracy": 0.8, "val_loss": 0.4, "val_accuracy": 0.85, "lr": 0.002}
    h = history.with_epoch(base, history.epoch_record(1, logs, 3.21))
    h = history.with_epoch(h, history.epoch_record(1, {**logs, "loss": 0.45}, 3.0))
    assert h["epochs"] == [{"epoch": 1, "loss": 0.45, "accuracy": 0.8, "val_loss": 0.4, "val_accuracy": 0.85,
                            "seconds": 3.0}]
    done = history.finalised(history.with_epoch(h, history.epoch_record(2, logs, 2.0)), 7.5,
                             [{"rank": 0, "peak_rss_mb": 500.0}, {"rank": 1, "peak_rss_mb": 480.5}])
    assert (done["complete"], done["epochs_completed"], done["total_seconds"]) == (True, 2, 17.5)
    assert done["peak_rss_mb_per_worker"] == [500.0, 480.5]
