"""Simulated arrivals for one day (scripts/simulate_arrivals.py): what a scanner would deliver to the landing
folder, for the demo and the tests.

kind digits: MNIST TEST images (never the training ones, so a model trained on MNIST meets them for the first
time), each rotated, scaled and shifted a little and rendered as a scan: larger (96-128 pixels a side), dark
ink on light, slightly uneven paper, grey levels with sensor noise; most as PNG, one in four as JPEG. With labels,
labels.csv (file,label) beside them. The other kinds are NOT handwritten digits, for the drift check to flag:
noise (random grey pixels), blobs (smooth colour photographs of nothing in particular), letters (typed capital
letters, which look like strokes but are no digits).

Everything is drawn from a generator seeded by the date and the kind, so the same day gives the same bytes; the
day's folder is written in a temporary sibling and published in one move (outputs.publishing).
"""
from __future__ import annotations

import hashlib
import io
import string

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from pipeline import outputs, storage
from pipeline.config import PipelineConfig
from pipeline.errors import PipelineError
from pipeline.formats.idx import read_array
from pipeline.layout import LABELS_FILE, BatchFiles

KINDS = ("digits", "noise", "blobs", "letters")
SCAN_SIZES = (96, 128)      # pixels a side of a scanned image, low and high
JPEG_SHARE = 0.25           # of the scans saved as JPEG, the rest as PNG


def simulate_day(cfg: PipelineConfig, files: BatchFiles, count: int, kind: str = "digits",
                 labels: bool = False) -> list[tuple[str, int | None]]:
    """Write `count` images of `kind` into the day's landing folder (replacing what was there), with labels.csv
    when `labels`; returns (file name, label or None) per image."""
    if kind not in KINDS:
        raise PipelineError(f"--kind {kind}: expected one of {', '.join(KINDS)}")
    if not 1 <= count <= 10_000:
        raise PipelineError(f"--count {count}: expected between 1 and 10000 (the MNIST test images)")
    if labels and kind != "digits":
        raise PipelineError(f"--labels: only digits have labels, not {kind}")
    rng = np.random.default_rng(day_seed(files.ds, kind))
    arrivals = list(_digits(cfg, rng, count) if kind == "digits" else _non_digits(kind, rng, count))
    with outputs.publishing(files.landing) as tmp:
        storage.makedirs(tmp)
        for name, data, _ in arrivals:
            storage.write_bytes(f"{tmp}/{name}", data)
        if labels:
            rows = "".join(f"{name},{label}\n" for name, _, label in arrivals)
            storage.write_bytes(f"{tmp}/{LABELS_FILE}", f"file,label\n{rows}".encode())
    return [(name, label) for name, _, label in arrivals]


def day_seed(ds: str, kind: str) -> int:
    """A seed of the date and kind alone: reruns and backfills of a day draw the same arrivals."""
    return int.from_bytes(hashlib.sha256(f"{ds}/{kind}".encode()).digest()[:8], "big")


def _digits(cfg: PipelineConfig, rng: np.random.Generator, count: int):
    """(file name, encoded scan, label) of `count` MNIST test digits drawn without repeats."""
    folder = cfg.resolve(cfg.paths.input).rstrip("/")
    for name in (cfg.data.test_images, cfg.data.test_labels):
        if not storage.exists(f"{folder}/{name}"):
            raise PipelineError(f"paths.input {folder}: {name} not found (simulated digits are MNIST's test images)")
    images = read_array(f"{folder}/{cfg.data.test_images}")
    labels = read_array(f"{folder}/{cfg.data.test_labels}")
    if count > len(images):
        raise PipelineError(f"--count {count}: {folder}/{cfg.data.test_images} holds {len(images)} test images, "
                            "and a day draws each at most once")
    for i, index in enumerate(sorted(rng.choice(len(images), size=count, replace=False))):
        scan = scanned(images[index], rng)
        name, data = encoded(f"scan-{i:04d}", scan, rng)
        yield name, data, int(labels[index])


def scanned(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """A 28x28 MNIST digit (light ink on black) as a scanner gives it: larger, turned, scaled and shifted a little,
    dark ink on light paper lit a little unevenly, grey levels with sensor noise."""
    size = int(rng.integers(SCAN_SIZES[0], SCAN_SIZES[1] + 1))
    ink = Image.fromarray(digit).resize((size, size), Image.BICUBIC)
    scale = rng.uniform(0.8, 1.1)
    scaled = ink.resize((round(size * scale),) * 2, Image.BICUBIC)
    canvas = Image.new("L", (size, size), 0)
    offset = (size - scaled.size[0]) // 2
    shift = rng.uniform(-0.05, 0.05, 2) * size
    canvas.paste(scaled, (offset + round(shift[0]), offset + round(shift[1])))
    canvas = canvas.rotate(rng.uniform(-12, 12), resample=Image.BICUBIC)
    return on_paper(np.asarray(canvas, dtype=np.float32) / 255.0, rng)


def on_paper(ink: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """Ink levels in [0, 1] printed dark on light paper, with a lighting gradient and noise, slightly blurred."""
    height, width = ink.shape
    paper = rng.uniform(210, 245) + np.linspace(-8, 8, width)[None, :] * rng.uniform(-1, 1)
    dark = rng.uniform(15, 70)
    grey = paper - ink * (paper - dark) + rng.normal(0, rng.uniform(2, 6), ink.shape)
    image = Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8))
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9)))


def encoded(stem: str, image: Image.Image, rng: np.random.Generator) -> tuple[str, bytes]:
    """(file name, bytes): PNG, or JPEG for a share of them, as scanners are set up differently."""
    out = io.BytesIO()
    if rng.random() < JPEG_SHARE:
        image.save(out, format="JPEG", quality=int(rng.integers(75, 93)))
        return f"{stem}.jpg", out.getvalue()
    image.save(out, format="PNG")
    return f"{stem}.png", out.getvalue()


def _non_digits(kind: str, rng: np.random.Generator, count: int):
    draw = {"noise": _noise, "blobs": _blobs, "letters": _letter}[kind]
    for i in range(count):
        size = int(rng.integers(SCAN_SIZES[0], SCAN_SIZES[1] + 1))
        name, data = encoded(f"{kind}-{i:04d}", draw(rng, size), rng)
        yield name, data, None


def _noise(rng: np.random.Generator, size: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8))


def _blobs(rng: np.random.Generator, size: int) -> Image.Image:
    """A smooth colour picture: a few random colours blended over the frame, like an out-of-focus photograph."""
    coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(coarse, "RGB").resize((size, size), Image.BICUBIC)


def _letter(rng: np.random.Generator, size: int) -> Image.Image:
    """A typed capital letter, dark on paper."""
    canvas = Image.new("L", (size, size), 0)
    font = ImageFont.load_default(size=round(size * 0.6))
    letter = string.ascii_uppercase[int(rng.integers(0, 26))]
    ImageDraw.Draw(canvas).text((size / 2, size / 2), letter, fill=255, font=font, anchor="mm")
    return on_paper(np.asarray(canvas, dtype=np.float32) / 255.0, rng)
