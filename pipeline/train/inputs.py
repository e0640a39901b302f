"""The input pipeline of one Horovod worker: its shard of the curated Parquet, read by Petastorm, fed to tf.data.

Each rank reads only its own row groups (cur_shard = rank). Training repeats forever and the worker takes a
fixed number of steps per epoch, identical on every rank; validation is one exact pass over the rank's shard
per epoch (evaluation has no collective operation, so ranks may take different step counts there).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from petastorm.workers_pool.thread_pool import ThreadPool

from pipeline.schema import IMAGE_SHAPE, NUM_CLASSES
from pipeline.train.params import TrainParams

COLUMNS = ["image", "label"]
FLAT_PIXELS = int(np.prod(IMAGE_SHAPE))


@contextmanager
def open_shard(url: str, params: TrainParams, rank: int, size: int, repeat: bool) -> Iterator:
    """A Petastorm batch reader over this rank's row groups: thread pool, bounded queue, seeded shuffling.

    Row groups arrive already converted to NumPy (convert_early_to_numpy) so the list column is decoded in the
    reader thread, not in the thread feeding TensorFlow. A one-pass reader (repeat=False) returns every row of
    the shard exactly once: see ExactEndThreadPool.
    """
    reader = open_exact_reader(url, COLUMNS, rank if size > 1 else None, size if size > 1 else None,
                               workers=params.reader_workers, queue_size=params.reader_queue_size,
                               seed=params.seed + rank, repeat=repeat)
    try:
        yield reader
    finally:
        reader.stop()
        reader.join()


def open_exact_reader(url: str, columns: list[str], shard: int | None, shard_count: int | None, workers: int = 1,
                      queue_size: int = 4, seed: int = 0, repeat: bool = False):
    """What petastorm.make_batch_reader builds for a plain Parquet store, with ExactEndThreadPool as its pool.

    Reader takes its pool as an argument (its documented extension point); make_batch_reader offers no way to
    pass one, so the few lines it runs before Reader(...) are repeated here.
    """
    from petastorm.arrow_reader_worker import ArrowReaderWorker
    from petastorm.fs_utils import get_filesystem_and_path_or_paths, normalize_dir_url
    from petastorm.reader import Reader
    filesystem, path = get_filesystem_and_path_or_paths(normalize_dir_url(url))
    pool = ExactEndThreadPool(workers, queue_size, shuffle_rows=repeat, seed=seed)
    return Reader(filesystem, path, schema_fields=columns, worker_class=ArrowReaderWorker, reader_pool=pool,
                  seed=seed, shuffle_rows=repeat, shuffle_row_groups=repeat, num_epochs=None if repeat else 1,
                  cur_shard=shard, shard_count=shard_count, is_batched_reader=True, convert_early_to_numpy=True)


class ExactEndThreadPool(ThreadPool):
    """Petastorm's ThreadPool without the race that ends a finite read early (petastorm 0.13.1).

    ThreadPool.get_results ends the read when `all_workers_done()` and then `ventilator.completed()` are true,
    read one after the other while the ventilator thread keeps handing out row groups. When it hands out the
    last ones between the two reads, the first saw nothing pending and the second sees ventilation over: the
    read ends with row groups still queued (no rows at all when it happens on the first call). Reading
    `completed()` first closes the window: the ventilator counts an item before it marks itself complete, so
    once it is complete the counters are final and "all done" means all done.
    """

    def all_workers_done(self) -> bool:
        ventilation_over = self._ventilator is None or self._ventilator.completed()
        return ventilation_over and super().all_workers_done()


def row_group_arrays(row_groups: Iterator, counter: RowCounter | None = None) -> Iterator[tuple[np.ndarray, ...]]:
    """Each Petastorm row group as two arrays, flat float32 pixels and int32 labels, handed to tf.data whole;
    `counter` adds up the rows (a validation pass is exact only if they add up to its shard)."""
    for group in row_groups:
        images = np.ascontiguousarray(group.image, dtype=np.float32).reshape((-1, FLAT_PIXELS))
        if counter is not None:
            counter.rows += len(images)
        yield images, np.asarray(group.label, dtype=np.int32)


def batched(row_groups, batch_size: int, drop_remainder: bool):
    """A tf.data pipeline cutting row groups (any sizes) into batches of `batch_size` rows, then shaped and one-hot
    encoded for the model, all in TensorFlow's C++ threads. `row_groups` is a callable returning an iterator of
    (images, labels) arrays (a new pass each time it is called); the rest of one is carried over to the next."""
    import tensorflow as tf
    signature = (tf.TensorSpec((None, FLAT_PIXELS), tf.float32), tf.TensorSpec((None,), tf.int32))
    groups = tf.data.Dataset.from_generator(row_groups, output_signature=signature)
    return (groups.rebatch(batch_size, drop_remainder=drop_remainder)
            .map(to_model_inputs, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(tf.data.AUTOTUNE))


def shuffled_passes(row_groups: Iterator[tuple[np.ndarray, np.ndarray]], groups_per_pass: int, window_rows: int,
                    seed: int, chunk_rows: int = 1024) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The rows of each pass over a shard (`groups_per_pass` row groups) in a seeded random order, handed on in
    chunks of `chunk_rows`: a pass is shuffled whole when it holds at most `window_rows` rows, else in windows of
    whole row groups holding at least that many. A window never spans two passes, so every row comes once a pass,
    as model.fit's shuffle shows each row once an epoch. (With more than one reader thread, train.reader_workers,
    the first row group of a pass can overtake the last of the one before: the two swap windows.)"""
    rng = np.random.default_rng(seed)
    window: list[tuple[np.ndarray, np.ndarray]] = []
    rows = 0
    for count, (images, labels) in enumerate(row_groups, start=1):
        window.append((images, labels))
        rows += len(images)
        if rows >= window_rows or count % groups_per_pass == 0:
            yield from _permuted(window, rng, chunk_rows)
            window, rows = [], 0
    yield from _permuted(window, rng, chunk_rows)    # a finite input's last, partial window


def _permuted(window: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator, chunk_rows: int):
    """The window's rows in a random order. Each row group is copied into one array and let go at once, so the
    window is held about once, not twice (3 KB a row)."""
    if not window:
        return
    count = sum(len(labels) for _, labels in window)
    images = np.empty((count, *window[0][0].shape[1:]), window[0][0].dtype)
    labels = np.empty(count, window[0][1].dtype)
    start = 0
    while window:
        group_images, group_labels = window.pop(0)
        images[start:start + len(group_labels)], labels[start:start + len(group_labels)] = group_images, group_labels
        start += len(group_labels)
    order = rng.permutation(count)
    for start in range(0, count, chunk_rows):
        rows = order[start:start + chunk_rows]
        yield images[rows], labels[rows]


def row_groups_per_pass(reader) -> int:
    """How many row groups one pass of this Petastorm reader hands over: the items its ventilator hands out each
    epoch, one per row group of the rank's shard (no shuffle_row_drop_partitions here). Petastorm 0.13.1 keeps
    them as a private list; the shard's own filtering (cur_shard, predicates) is already applied to it."""
    return len(reader.ventilator._items_to_ventilate)


def to_model_inputs(images, labels):
    """Flat pixels -> (n, *IMAGE_SHAPE); class indices -> one-hot rows (categorical cross-entropy)."""
    import tensorflow as tf
    return tf.reshape(images, (-1, *IMAGE_SHAPE)), tf.one_hot(labels, NUM_CLASSES, dtype=tf.float32)


class RowCounter:
    """Rows a rank's validation pass saw: weights its metrics when ranks' shards differ in size."""

    def __init__(self) -> None:
        self.rows = 0


def training_dataset(reader, batch_size: int, shuffle_window_rows: int = 0, seed: int = 0):
    """Endless full batches from a repeating reader; the caller bounds each epoch with steps_per_epoch.

    Petastorm shuffles the row groups' order and the rows within each, but a batch cut from one row group holds
    only its rows, and the curated row groups keep MNIST's file order, whose neighbours look alike (the mean ink of
    a row group varies 3.2 times as much as that of a random group of the same size). Batches drawn that way left
    model_1 0.21 points below the same training with the whole split shuffled, and three times as spread over
    seeds (benchmarks/README.md, parity). So each pass over the shard is shuffled row by row first
    (train.shuffle_window_rows, by default more than a shard of MNIST: the whole pass, as model.fit shuffles)."""
    if not shuffle_window_rows:
        return batched(lambda: row_group_arrays(iter(reader)), batch_size, drop_remainder=True)
    groups_per_pass = row_groups_per_pass(reader)
    return batched(lambda: shuffled_passes(row_group_arrays(iter(reader)), groups_per_pass, shuffle_window_rows, seed),
                   batch_size, drop_remainder=True)


def validation_dataset(reader, batch_size: int, counter: RowCounter):
    """One pass over the shard each time Keras iterates it (every epoch), counting the rows it hands over."""
    def one_pass():
        if reader.last_row_consumed:
            reader.reset()
        counter.rows = 0
        yield from row_group_arrays(iter(reader), counter)
    return batched(one_pass, batch_size, drop_remainder=False)
