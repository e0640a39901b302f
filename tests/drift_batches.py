"""Realistic day batches for the drift tests, as 28x28 float images the way daily scoring stores them.

MNIST-like: MNIST test digits drawn as a scanner gives them (dark ink on white paper, larger, lightly rotated,
scaled and shifted, with paper noise, saved as PNG) and brought back with the same conversion prediction applies to
image files (pipeline.formats.images.to_mnist). Non-digits: uniform noise, blobs, near-blank pages and random
strokes (letter-like), through the same conversion.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from pipeline.config import REPO_ROOT
from pipeline.formats.idx import read_array
from pipeline.formats.images import to_mnist

PAGE = 112                # the scanned field, pixels a side
NON_DIGIT_KINDS = ("noise", "blob", "blank_page", "strokes")


def mnist_test_digits(count: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` MNIST test images (uint8, n x 28 x 28) and labels, from the bundled IDX files."""
    images = read_array(str(REPO_ROOT / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"))[offset:offset + count]
    labels = read_array(str(REPO_ROOT / "data" / "mnist" / "t10k-labels-idx1-ubyte.gz"))[offset:offset + count]
    return images.reshape(-1, 28, 28), labels.astype(np.int32)


def as_scanned(page: Image.Image, rng: np.random.Generator) -> np.ndarray:
    """Paper noise, a PNG round trip, then prediction's conversion to an MNIST image (784 floats)."""
    grey = np.asarray(page, dtype=np.float32) + rng.normal(0.0, 4.0, (PAGE, PAGE))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    with Image.open(io.BytesIO(buffer.getvalue())) as png:
        return to_mnist(png)


def scanned_digit(digit: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One MNIST digit printed dark on white at 3x, rotated up to 10 degrees, scaled 0.85-1.15, shifted a little."""
    size = int(round(84 * rng.uniform(0.85, 1.15)))
    ink = Image.fromarray(digit).resize((size, size), Image.BICUBIC).rotate(rng.uniform(-10, 10),
                                                                            resample=Image.BICUBIC)
    page = Image.new("L", (PAGE, PAGE), 0)
    left, top = (PAGE - size) // 2 + int(rng.integers(-8, 9)), (PAGE - size) // 2 + int(rng.integers(-8, 9))
    page.paste(ink, (left, top))
    return as_scanned(Image.eval(page, lambda v: 250 - v * 230 // 255), rng)


def mnist_like_batch(count: int, seed: int = 0, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`count` scanned MNIST test digits (n x 784 float32) and their true labels."""
    rng = np.random.default_rng(seed)
    digits, labels = mnist_test_digits(count, offset)
    return np.stack([scanned_digit(d, rng) for d in digits]).astype(np.float32), labels


def non_digit(kind: str, rng: np.random.Generator) -> np.ndarray:
    """One scanned picture that is not a handwritten digit."""
    if kind == "noise":
        return as_scanned(Image.fromarray(rng.integers(0, 256, (PAGE, PAGE)).astype(np.uint8)), rng)
    page = Image.new("L", (PAGE, PAGE), 245)
    draw = ImageDraw.Draw(page)
    if kind == "blob":
        for _ in range(int(rng.integers(1, 4))):
            x, y, rx, ry = rng.integers(20, 92), rng.integers(20, 92), rng.integers(8, 30), rng.integers(8, 30)
            draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=int(rng.integers(20, 120)))
        page = page.filter(ImageFilter.GaussianBlur(3))
    elif kind == "strokes":   # 2-4 straight strokes: letters such as A, K, X, Z, T, H
        points = rng.integers(20, 92, (int(rng.integers(3, 6)), 2))
        draw.line([tuple(p) for p in points], fill=30, width=int(rng.integers(6, 10)))
    # blank_page: the page as it is, paper noise only
    return as_scanned(page, rng)


def non_digit_batch(count: int, seed: int = 0, kinds: tuple[str, ...] = NON_DIGIT_KINDS) -> np.ndarray:
    """`count` non-digit pictures (n x 784 float32), the kinds in turn."""
    rng = np.random.default_rng(seed)
    return np.stack([non_digit(kinds[i % len(kinds)], rng) for i in range(count)]).astype(np.float32)


def stand_in_predictions(classes: np.ndarray, confidence: float) -> np.ndarray:
    """Probabilities of a model that predicts `classes` with top probability `confidence` (rest spread evenly)."""
    probabilities = np.full((len(classes), 10), (1.0 - confidence) / 9, dtype=np.float32)
    probabilities[np.arange(len(classes)), classes] = confidence
    return probabilities


def write_day(spark, batch, images: np.ndarray, probabilities: np.ndarray, model_version: str = "3",
              quarantined: int = 0, low_confidence: float | None = None) -> None:
    """A day as daily scoring leaves it: the images and predictions partitions, and scoring.json as the scoring
    summarises them (at `low_confidence`, by default drift.low_confidence's default)."""
    from pipeline import storage
    from pipeline.batch.score import scoring_summary
    from pipeline.config import DriftConfig
    from pipeline.model_ref import ResolvedModel
    from pipeline.schema import BATCH_IMAGES_SCHEMA, BATCH_PREDICTIONS_SCHEMA
    files = [f"scan-{i:04d}.png" for i in range(len(images))]
    spark.createDataFrame([(f, f, image.tolist()) for f, image in zip(files, images, strict=True)],
                          BATCH_IMAGES_SCHEMA).repartition(2).write.parquet(batch.images)
    rows = [(f, f, int(p.argmax()), float(p.max()), p.tolist(), "mnist", model_version)
            for f, p in zip(files, probabilities, strict=True)]
    spark.createDataFrame(rows, BATCH_PREDICTIONS_SCHEMA).repartition(2).write.parquet(batch.predictions)
    scorer = ResolvedModel("mnist", "stand-in.keras", model_version, "a test's stand-in model")
    report = {"input_kind": "images", "quarantined": quarantined, "dropped": 0}
    storage.write_json(batch.scoring, scoring_summary(
        spark.read.parquet(batch.predictions), batch, scorer, report,
        DriftConfig().low_confidence if low_confidence is None else low_confidence))


def training_layout(spark, root, count: int):
    """A layout under `root` whose curated train split holds the first `count` MNIST training images."""
    from pipeline.layout import Layout
    layout = Layout(str(root / "input"), str(root / "raw"), str(root / "raw" / "curated"), str(root / "run"),
                    str(root / "landing"), str(root / "batches"))
    write_curated_train(spark, layout, count)
    return layout


def write_curated_train(spark, layout, count: int, fingerprint: str = "curated-for-tests") -> None:
    """The first `count` MNIST training images as the curated train split, with its manifest."""
    from pipeline import storage
    from pipeline.schema import CURATED_SCHEMA
    images = read_array(str(REPO_ROOT / "data" / "mnist" / "train-images-idx3-ubyte.gz"))[:count].reshape(count, -1)
    labels = read_array(str(REPO_ROOT / "data" / "mnist" / "train-labels-idx1-ubyte.gz"))[:count]
    rows = [(f"train:{i}", (image / 255.0).astype(np.float32).tolist(), int(label))
            for i, (image, label) in enumerate(zip(images, labels, strict=True))]
    spark.createDataFrame(rows, CURATED_SCHEMA).repartition(2).write.parquet(layout.curated("train"))
    storage.write_json(layout.curated_manifest, {"fingerprint": fingerprint})
