"""Write IDX files of N images made from MNIST digits by seeded random shifts, rotations and scales.

The files have the bundled data set's names and layout (a train pair and a t10k pair, 6:1 like MNIST), so the
ingest stage reads them with nothing but `paths.input` changed. They are written uncompressed: the point is to
scale the Spark stages, and a multi-gigabyte gzip stream cannot be split between tasks. Memory stays constant in
N: digits are transformed and appended CHUNK images at a time, each chunk from its own seeded generator, so the
output depends only on (source, N, seed).
"""
from __future__ import annotations

import argparse
import logging
import struct
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:          # `python benchmarks/generate_idx.py` puts benchmarks/, not the repo, on the path
    sys.path.insert(0, str(REPO))

from pipeline.formats.idx import read_array  # noqa: E402

log = logging.getLogger(__name__)

CHUNK = 10_000
SIZE = 28
MAX_ROTATION_DEG = 15.0
SCALE_RANGE = (0.9, 1.1)
MAX_SHIFT_PX = 2.0
TRAIN_FRACTION = 6 / 7     # MNIST's 60,000 : 10,000
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
SOURCE_FILES = {split: (f"{images}.gz", f"{labels}.gz") for split, (images, labels) in FILES.items()}


def idx_header(dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, 0x08, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def transform_digits(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each 28x28 digit rotated, scaled and shifted at random about the centre (bilinear, zero outside)."""
    n = len(images)
    angle = np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG, n)).astype(np.float32)
    scale = rng.uniform(*SCALE_RANGE, n).astype(np.float32)
    shift = rng.uniform(-MAX_SHIFT_PX, MAX_SHIFT_PX, (n, 2)).astype(np.float32)
    centre = (SIZE - 1) / 2
    rows, cols = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32).reshape(2, 1, -1) - centre
    rows, cols = rows - shift[:, :1], cols - shift[:, 1:]
    cos, sin = (np.cos(angle) / scale)[:, None], (np.sin(angle) / scale)[:, None]
    # Inverse mapping: where in the source each output pixel comes from.
    src_r = cos * rows - sin * cols + centre
    src_c = sin * rows + cos * cols + centre
    return _bilinear(images, src_r, src_c)


def _bilinear(images: np.ndarray, src_r: np.ndarray, src_c: np.ndarray) -> np.ndarray:
    """Sample `images` (n, 28, 28) at fractional coordinates (n, 784); a one-pixel zero border covers the edges."""
    n, padded = len(images), SIZE + 2
    flat = np.pad(images, ((0, 0), (1, 1), (1, 1))).reshape(n, -1).astype(np.float32)
    src_r = np.clip(src_r, -1, SIZE) + 1
    src_c = np.clip(src_c, -1, SIZE) + 1
    r0 = np.minimum(np.floor(src_r), padded - 2).astype(np.int32)
    c0 = np.minimum(np.floor(src_c), padded - 2).astype(np.int32)
    fr, fc = src_r - r0, src_c - c0
    top_left = r0 * padded + c0

    def at(offset: int) -> np.ndarray:
        return np.take_along_axis(flat, top_left + offset, axis=1)

    value = ((1 - fr) * ((1 - fc) * at(0) + fc * at(1))
             + fr * ((1 - fc) * at(padded) + fc * at(padded + 1)))
    return np.clip(np.rint(value), 0, 255).astype(np.uint8).reshape(n, SIZE, SIZE)


def split_sizes(n: int) -> dict[str, int]:
    """Train and test counts for N images in MNIST's 6:1 ratio (both at least 1)."""
    if n < 2:
        raise ValueError(f"need at least 2 images, got {n}")
    train = min(n - 1, max(1, round(n * TRAIN_FRACTION)))
    return {"train": train, "test": n - train}


def generate(source_dir: str | Path, out_dir: str | Path, n: int, seed: int) -> dict:
    """Write the four IDX files of N transformed digits under `out_dir`; train digits come from the source's
    train set and test digits from its test set, so the generated test set shares no source digit with train."""
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    counts = split_sizes(n)
    for code, (split, count) in enumerate(counts.items()):
        images = read_array(source_dir / SOURCE_FILES[split][0])
        labels = read_array(source_dir / SOURCE_FILES[split][1])
        _write_split(images, labels, out_dir, FILES[split], count, seed, code)
    seconds = time.perf_counter() - started
    log.info("generated %d images in %s in %.1f s", n, out_dir, seconds)
    return {"n": n, "counts": counts, "seed": seed, "out_dir": str(out_dir), "seconds": seconds,
            "bytes": sum(p.stat().st_size for p in out_dir.iterdir() if p.is_file())}


def _write_split(images: np.ndarray, labels: np.ndarray, out_dir: Path, names: tuple[str, str], count: int,
                 seed: int, split_code: int) -> None:
    with open(out_dir / names[0], "wb") as image_file, open(out_dir / names[1], "wb") as label_file:
        image_file.write(idx_header((count, SIZE, SIZE)))
        label_file.write(idx_header((count,)))
        for chunk, start in enumerate(range(0, count, CHUNK)):
            rng = np.random.default_rng([seed, split_code, chunk])
            picked = rng.integers(0, len(images), min(CHUNK, count - start))
            image_file.write(transform_digits(images[picked], rng).tobytes())
            label_file.write(labels[picked].tobytes())


def is_complete(out_dir: str | Path, n: int) -> bool:
    """True when `out_dir` already holds the files for N images (headers and sizes), so a rerun can skip."""
    out_dir = Path(out_dir)
    for split, count in split_sizes(n).items():
        images, labels = (out_dir / name for name in FILES[split])
        if not (images.exists() and labels.exists()):
            return False
        if images.stat().st_size != 16 + count * SIZE * SIZE or labels.stat().st_size != 8 + count:
            return False
    return True


def args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, required=True, help="number of images (train + test, 6:1)")
    parser.add_argument("--out", required=True, help="output folder for the four IDX files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", default=str(Path(__file__).resolve().parent.parent / "data" / "mnist"),
                        help="folder holding the MNIST .gz IDX files (default: the bundled copy)")
    return parser


def _main(argv: list[str] | None = None) -> int:
    args = args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    generate(args.source, args.out, args.n, args.seed)
    return 0


def main() -> None:
    sys.exit(_main())


if __name__ == "__main__":
    main()
