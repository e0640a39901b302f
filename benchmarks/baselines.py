"""The simplest alternative a user would pick for each stage: one Python process, NumPy and PyArrow, Keras.

These are the yardsticks of `make bench`, written the way a notebook would do it, so each ratio says what the
distributed machinery costs (or saves) against that. They share no code with the stages on purpose; only the
model definitions (the thing being trained) come from pipeline.train.models.
"""
from __future__ import annotations

import gzip
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

PIXELS = 28 * 28
READ_CHUNK = 50_000
SPLIT_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


# ---- ingest + prepare: IDX files -> raw Parquet -> curated train/validation/test Parquet ----

def _open_idx(path: Path) -> tuple[BinaryIO, tuple[int, ...]]:
    """An IDX file (gzip or plain, told from its first bytes) positioned after its header, and its dims."""
    with open(path, "rb") as probe:
        compressed = probe.read(2) == b"\x1f\x8b"
    f = gzip.open(path, "rb") if compressed else open(path, "rb")
    head = f.read(4)
    dims = struct.unpack(f">{head[3]}I", f.read(4 * head[3]))
    return f, dims


def _find(input_dir: Path, stem: str) -> Path:
    for candidate in (input_dir / stem, input_dir / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{input_dir}: neither {stem} nor {stem}.gz")


def read_idx_chunks(input_dir: Path, split: str, chunk: int = READ_CHUNK) -> Iterator[tuple[int, np.ndarray,
                                                                                         np.ndarray]]:
    """(first index, images (n, 784) uint8, labels (n,) uint8) chunk by chunk: constant memory in N."""
    image_file, image_dims = _open_idx(_find(input_dir, SPLIT_FILES[split][0]))
    label_file, label_dims = _open_idx(_find(input_dir, SPLIT_FILES[split][1]))
    if image_dims[0] != label_dims[0]:
        raise ValueError(f"{input_dir}/{split}: {image_dims[0]} images but {label_dims[0]} labels")
    with image_file, label_file:
        for start in range(0, image_dims[0], chunk):
            n = min(chunk, image_dims[0] - start)
            images = np.frombuffer(image_file.read(n * PIXELS), dtype=np.uint8).reshape(n, PIXELS)
            yield start, images, np.frombuffer(label_file.read(n), dtype=np.uint8)


def _binary_column(images: np.ndarray) -> pa.Array:
    """(n, 784) uint8 -> a binary column without one Python object per image."""
    offsets = np.arange(0, (len(images) + 1) * PIXELS, PIXELS, dtype=np.int32)
    return pa.Array.from_buffers(pa.binary(), len(images), [None, pa.py_buffer(offsets),
                                                            pa.py_buffer(np.ascontiguousarray(images))])


def _float_list_column(images: np.ndarray) -> pa.Array:
    """(n, 784) uint8 -> list<float> of values in [0, 1], the curated `image` column."""
    values = pa.array((images.astype(np.float32) / np.float32(255.0)).ravel())
    offsets = pa.array(np.arange(0, (len(images) + 1) * PIXELS, PIXELS, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, values)


def _record_ids(name: str, start: int, n: int) -> pa.Array:
    return pa.array([f"{name}:{i}" for i in range(start, start + n)], pa.string())


RAW = pa.schema([("record_id", pa.string()), ("source_split", pa.string()), ("source_index", pa.int64()),
                 ("image", pa.binary()), ("label", pa.int32())])
CURATED = pa.schema([("record_id", pa.string()), ("image", pa.list_(pa.float32())), ("label", pa.int32())])


def convert_numpy_pyarrow(input_dir: str | Path, out_dir: str | Path, row_group_rows: int = 1000,
                          validation_fraction: float = 0.1, seed: int = 42) -> dict:
    """Single-process ingest + prepare of the same IDX files: a raw table, then curated train/validation/test
    with a seeded validation split (MNIST's 6,000 of 60,000 by default), Snappy Parquet with the stages'
    row-group size. Returns the counts."""
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    writers = {name: pq.ParquetWriter(out_dir / name / "part-0.parquet", schema, compression="snappy")
               for name, schema in (("raw", RAW), ("train", CURATED), ("validation", CURATED), ("test", CURATED))
               if (out_dir / name).mkdir(parents=True, exist_ok=True) is None}
    counts = dict.fromkeys(writers, 0)
    try:
        for split in SPLIT_FILES:
            in_validation = _validation_mask(input_dir, split, validation_fraction, seed)
            name = SPLIT_FILES[split][0]
            for start, images, labels in read_idx_chunks(input_dir, split):
                n = len(labels)
                ids, label_col = _record_ids(name, start, n), pa.array(labels.astype(np.int32))
                raw = pa.table([ids, pa.array([split] * n), pa.array(np.arange(start, start + n)),
                                _binary_column(images), label_col], schema=RAW)
                writers["raw"].write_table(raw, row_group_size=row_group_rows)
                counts["raw"] += n
                curated = pa.table([ids, _float_list_column(images), label_col], schema=CURATED)
                for target, mask in _targets(split, in_validation[start:start + n]):
                    part = curated.filter(pa.array(mask))
                    writers[target].write_table(part, row_group_size=row_group_rows)
                    counts[target] += len(part)
    finally:
        for writer in writers.values():
            writer.close()
    return counts


def _validation_mask(input_dir: Path, split: str, fraction: float, seed: int) -> np.ndarray:
    """Which training records go to validation: a seeded choice of `fraction` of them."""
    _, dims = _open_idx(_find(input_dir, SPLIT_FILES[split][1]))
    mask = np.zeros(dims[0], dtype=bool)
    if split == "train":
        size = min(max(1, round(fraction * dims[0])), dims[0] - 1)
        mask[np.random.default_rng(seed).choice(dims[0], size, replace=False)] = True
    return mask


def _targets(split: str, in_validation: np.ndarray) -> list[tuple[str, np.ndarray]]:
    if split == "test":
        return [("test", np.ones(len(in_validation), dtype=bool))]
    return [("train", ~in_validation), ("validation", in_validation)]


# ---- the curated Parquet as NumPy: the in-memory data set of the original study ----

def load_curated(path: str | Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """x (n, 28, 28, 1) float32 and integer labels (n,) of a curated split, read whole into memory."""
    table = pq.read_table(str(path).removeprefix("file://"), columns=["image", "label"])
    if limit is not None:
        table = table.slice(0, limit)
    images = table.column("image").combine_chunks()
    x = images.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, 28, 28, 1)
    return x, table.column("label").to_numpy().astype(np.int64)


def one_hot(labels: np.ndarray, num_classes: int = 10) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[labels]


# ---- training: model.fit on NumPy in one process ----

def fit_numpy(model_name: str, train: tuple, validation: tuple, test: tuple, epochs: int, batch_size: int = 32,
              learning_rate: float = 0.001, seed: int = 42) -> dict:
    """The original study's way: the whole data set in memory, `model.fit`, batch 32, Adam. TensorFlow keeps
    its default thread pools (all cores), as in a notebook. Seconds per epoch include the validation pass."""
    import tensorflow as tf

    from pipeline.train.models import build_model
    tf.keras.utils.set_random_seed(seed)
    model = build_model(model_name)
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate), loss="categorical_crossentropy",
                  metrics=["accuracy"])
    timer = EpochTimer()
    history = model.fit(train[0], one_hot(train[1]), batch_size=batch_size, epochs=epochs, shuffle=True,
                        validation_data=(validation[0], one_hot(validation[1])), callbacks=[timer], verbose=0)
    test_loss, test_accuracy = model.evaluate(test[0], one_hot(test[1]), batch_size=1024, verbose=0)
    return {"epoch_seconds": timer.seconds, "test_accuracy": float(test_accuracy), "test_loss": float(test_loss),
            "val_accuracy": [float(v) for v in history.history["val_accuracy"]], "train_rows": len(train[1]),
            "samples_per_second": [len(train[1]) / s for s in timer.seconds]}


def EpochTimer():  # noqa: N802 (a factory: TensorFlow is imported only when a baseline trains)
    import tensorflow as tf

    class _EpochTimer(tf.keras.callbacks.Callback):
        """Wall seconds of each epoch, validation included (as the pipeline's history.json counts them)."""

        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(round(time.perf_counter() - self._start, 3))

    return _EpochTimer()


def evaluate_saved(model_path: str, test: tuple) -> dict:
    """Test loss and accuracy of a saved model, computed the same way for every side of the benchmark."""
    import tensorflow as tf
    model = tf.keras.models.load_model(model_path)
    loss, accuracy = model.evaluate(test[0], one_hot(test[1]), batch_size=1024, verbose=0)
    return {"test_accuracy": float(accuracy), "test_loss": float(loss)}


# ---- input pipeline: tf.data from in-memory NumPy ----

def tfdata_throughput(x: np.ndarray, labels: np.ndarray, batch_size: int, samples: int, seed: int = 42) -> dict:
    """Samples per second tf.data delivers from NumPy in memory (shuffled, batched, prefetched), the input
    pipeline of the single-process baseline."""
    import tensorflow as tf
    dataset = (tf.data.Dataset.from_tensor_slices((x, one_hot(labels))).shuffle(10_000, seed=seed).repeat()
               .batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE))
    return _drain(iter(dataset), batch_size, samples)


def _drain(batches, batch_size: int, samples: int) -> dict:
    next(batches)                                   # the first batch pays for building the pipeline
    started, seen = time.perf_counter(), 0
    while seen < samples:
        next(batches)
        seen += batch_size
    seconds = time.perf_counter() - started
    return {"samples": seen, "seconds": round(seconds, 3), "samples_per_second": seen / seconds}


# ---- batch prediction: the same input read and scored with model.predict in one process ----

PREDICTIONS = pa.schema([("id", pa.string()), ("prediction", pa.int32()), ("probabilities", pa.list_(pa.float32()))])


def load_model(model_path: str):
    import tensorflow as tf
    return tf.keras.models.load_model(model_path, compile=False)


def predict_parquet(model, parquet_path: str, out_path: str | Path, batch_size: int) -> dict:
    """Read the curated Parquet (ids, images, labels), `model.predict` the images, write the predictions with
    their probabilities as Parquet, and count the correct ones: what the stage does, in one process."""
    table = pq.read_table(str(parquet_path).removeprefix("file://"), columns=["record_id", "image", "label"])
    images = table.column("image").combine_chunks()
    x = images.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, 28, 28, 1)
    probabilities = model.predict(x, batch_size=batch_size, verbose=0)
    predicted = probabilities.argmax(axis=1)
    _write_predictions(out_path, table.column("record_id"), predicted, probabilities)
    labels = table.column("label").to_numpy()
    return {"images": len(x), "accuracy": float((predicted == labels).mean()),
            "predicted_counts": np.bincount(predicted, minlength=10).tolist()}


def predict_image_files(model, folder: str | Path, out_path: str | Path, batch_size: int,
                        suffixes: tuple[str, ...] = (".png",)) -> dict:
    """Open every image file in `folder` (by suffix) with PIL, bring it to the MNIST convention with the stages' own
    conversion (pipeline.formats.images.decode_image_file, the thing being measured like the models),
    `model.predict` them all and write the predictions (id = the file's path) as Parquet."""
    from pipeline.config import PredictConfig
    from pipeline.formats.images import decode_image_file
    paths = sorted(str(p) for p in Path(folder).iterdir() if p.suffix.lower() in suffixes)
    images = []
    for path in paths:
        image, error = decode_image_file(path, PredictConfig().max_image_pixels)
        if image is None:
            raise ValueError(f"{path}: {error}")
        images.append(image)
    x = np.stack(images).reshape(-1, 28, 28, 1)
    probabilities = model.predict(x, batch_size=batch_size, verbose=0)
    predicted = probabilities.argmax(axis=1)
    _write_predictions(out_path, pa.array(paths), predicted, probabilities)
    return {"images": len(paths), "predicted_counts": np.bincount(predicted, minlength=10).tolist()}


def _write_predictions(out_path: str | Path, ids, predicted: np.ndarray, probabilities: np.ndarray) -> None:
    offsets = pa.array(np.arange(0, probabilities.size + 1, probabilities.shape[1], dtype=np.int32))
    table = pa.table([ids, pa.array(predicted.astype(np.int32)),
                      pa.ListArray.from_arrays(offsets, pa.array(probabilities.astype(np.float32).ravel()))],
                     schema=PREDICTIONS)
    pq.write_table(table, str(out_path))

