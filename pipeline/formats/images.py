"""Ordinary image files (PNG/JPEG, colour or greyscale, either polarity, up to a pixel cap) -> the MNIST convention.

MNIST digits are light ink on a black background, size-normalised to fit a 20x20 box (aspect kept, with
anti-aliasing) and centred by their centre of mass in a 28x28 field (LeCun et al.). A model trained on MNIST
only recognises digits presented that way, so `to_mnist` does the same steps to any picture of a digit.
Decoding runs on the executors (`decode_image_files`), each file read from its path: only paths and errors reach
the driver (a few hundred files are decoded in the driver itself: pipeline.python_batches). A picture larger than
predict.max_image_pixels is refused from its header, before it is decoded.
"""
from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

from pipeline.python_batches import run_in_driver
from pipeline.schema import IMAGE_HEIGHT, IMAGE_PIXELS, IMAGE_WIDTH

MNIST_BOX = 20   # the box MNIST fits each digit into, inside the IMAGE_HEIGHT x IMAGE_WIDTH field
INK_THRESHOLD = 0.1  # of the peak ink level: fainter pixels are background noise (paper texture, JPEG blocks)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")  # the decoders for those names, and no others

DECODED_SCHEMA = StructType([
    StructField("path", StringType(), nullable=False),
    StructField("image", ArrayType(FloatType(), containsNull=False), nullable=True),
    StructField("error", StringType(), nullable=True),
])


def to_mnist(image: Image.Image) -> np.ndarray:
    """IMAGE_PIXELS float32 values in [0, 1], row-major IMAGE_HEIGHT x IMAGE_WIDTH: the digit in `image` as MNIST
    presents digits."""
    ink = light_ink_on_dark(greyscale(image))
    # The ink's bounding box from per-row and per-column flags: a fifth of the time of np.nonzero on every pixel.
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return np.zeros(IMAGE_PIXELS, dtype=np.float32)  # blank picture: nothing to centre
    cropped = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return centre_by_mass(fit_into_box(cropped, MNIST_BOX), IMAGE_HEIGHT, IMAGE_WIDTH).reshape(-1)


def greyscale(image: Image.Image) -> np.ndarray:
    """Luminance 0..255 as float32; transparent areas count as white paper; 16-bit, 32-bit and float greyscale
    scaled from their full range (PIL's convert("L") would clip them at 255: a 16-bit scan turns blank)."""
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float32)
        return values * np.float32(255.0 / _full_range(image.mode, float(values.max(initial=0.0))))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return np.asarray(image if image.mode == "L" else image.convert("L"), dtype=np.float32)


def _full_range(mode: str, peak: float) -> float:
    """White in a wide greyscale mode: 16-bit files use 0..65535; 32-bit integer and float images carry no depth,
    so the smallest usual range that holds their values ([0, 1] floats, 8, 16 bits, else their own peak)."""
    if mode.startswith("I;16"):
        return 65535.0
    for white in ((1.0,) if mode == "F" else ()) + (255.0, 65535.0):
        if peak <= white:
            return white
    return peak


def light_ink_on_dark(grey: np.ndarray) -> np.ndarray:
    """Ink level in [0, 1] on a 0 background: inverted when the background (the border's median) is light."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    background = float(np.median(border))
    if background > 127.5:
        grey, background = 255.0 - grey, 255.0 - background
    ink = np.subtract(grey, background, dtype=np.float32)
    np.maximum(ink, 0.0, out=ink)   # in place: the same values as np.clip, without two more copies
    peak = float(ink.max())
    if peak == 0.0:
        return ink
    ink /= peak
    ink[ink < INK_THRESHOLD] = 0.0
    return ink


def fit_into_box(ink: np.ndarray, box: int) -> np.ndarray:
    """Resize so the longer side is `box` pixels, aspect kept, anti-aliased (values stay in [0, 1])."""
    height, width = ink.shape
    scale = box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = Image.fromarray(np.round(ink * 255).astype(np.uint8)).resize(size, Image.LANCZOS)
    out = np.asarray(resized, dtype=np.float32) / 255.0
    peak = float(out.max())
    return out / peak if peak > 0 else out  # thin strokes fade when shrunk: restore full ink like MNIST


def centre_by_mass(ink: np.ndarray, field_height: int, field_width: int) -> np.ndarray:
    """Paste `ink` into a black field of the given size so its centre of mass lands on the field's centre."""
    height, width = ink.shape
    total = float(ink.sum())
    centre_y = float((np.arange(height)[:, None] * ink).sum() / total) if total else (height - 1) / 2
    centre_x = float((np.arange(width)[None, :] * ink).sum() / total) if total else (width - 1) / 2
    # MNIST's centres of mass sit at pixel index (14, 14), not the geometric 13.5 (measured on the test set:
    # mean 13.99, 14.01); matching it halves the difference between redrawn and original digits.
    top = int(np.clip(np.floor(field_height / 2 - centre_y + 0.5), 0, field_height - height))
    left = int(np.clip(np.floor(field_width / 2 - centre_x + 0.5), 0, field_width - width))
    field = np.zeros((field_height, field_width), dtype=np.float32)
    field[top:top + height, left:left + width] = ink
    return field


def decode_image_file(path: str, max_pixels: int) -> tuple[np.ndarray | None, str | None]:
    """(MNIST-convention image, None) for a readable picture of at most `max_pixels` pixels, (None, reason)
    otherwise. Only the header is read before the size is known: a small file can hold a huge picture."""
    try:
        with _open_file(path) as stream:
            if not stream.read(1):
                return None, "empty file (0 bytes)"
            stream.seek(0)
            return _decode_stream(stream, max_pixels)
    except OSError as exc:
        return None, _reason(exc)


def decode_image_bytes(data: bytes, max_pixels: int) -> tuple[np.ndarray | None, str | None]:
    """`decode_image_file` for a file's contents already in memory (an image posted to the served model)."""
    if not data:
        return None, "empty file (0 bytes)"
    try:
        return _decode_stream(io.BytesIO(data), max_pixels)
    except OSError as exc:
        return None, _reason(exc)


def _open_file(path: str):
    from pipeline import storage
    from pipeline.paths import local_path
    local = local_path(path)
    if local is not None:
        # The driver resolved links when it listed the folder: a file swapped for a link since then is not followed.
        return os.fdopen(os.open(local, os.O_RDONLY | os.O_NOFOLLOW), "rb")
    fs, p = storage.filesystem(path)
    return fs.open_input_file(p)


def _decode_stream(stream, max_pixels: int) -> tuple[np.ndarray | None, str | None]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the pixel cap below is the limit
            with Image.open(stream, formats=IMAGE_FORMATS) as image:     # lazy: the header only
                width, height = image.size
                if width * height > max_pixels:
                    return None, (f"{width}x{height} = {width * height} pixels, more than "
                                  f"predict.max_image_pixels {max_pixels}")
                image.load()
                # A phone or scanner may store the picture sideways and say so in EXIF: turn it as viewers do.
                ImageOps.exif_transpose(image, in_place=True)
                return to_mnist(image), None
    except (OSError, ValueError, SyntaxError, MemoryError, Image.DecompressionBombError) as exc:
        return None, _reason(exc)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):  # PIL's message names a stream object, not the file
        return f"{type(exc).__name__}: not a {', '.join(IMAGE_FORMATS)} image"
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def decode_image_files(spark: SparkSession, files: list[tuple[str, str]], max_pixels: int, *,
                       in_driver: bool = False) -> DataFrame:
    """(path, source) pairs -> rows (path, image or null, error or null): `source` (the real file behind `path`)
    read and decoded on the executors, or in the driver (pipeline.python_batches)."""
    def decode(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            decoded = [decode_image_file(source, max_pixels) for source in batch["source"]]
            yield pd.DataFrame({"path": batch["path"].to_numpy(),
                                "image": [image for image, _ in decoded],
                                "error": [error for _, error in decoded]})
    if in_driver:
        return run_in_driver(spark, pd.DataFrame(files, columns=["path", "source"]), decode, DECODED_SCHEMA)
    return spark.createDataFrame(files, "path string, source string").mapInPandas(decode, DECODED_SCHEMA)
