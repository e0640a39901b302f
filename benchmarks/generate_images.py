"""Write a folder of N scanned-style PNG files of MNIST test digits, with labels.csv (file,label) beside them.

Each image is drawn as the simulated arrivals draw a scan (pipeline.batch.arrivals.scanned: 96-128 pixels a side,
dark ink on uneven light paper, noise, turned and shifted a little), always saved as PNG. Digit i is MNIST test
digit i mod 10,000 with its own seeded generator, so the folder depends only on (source, N, seed) and can be
written again in part. The benchmark of `jobs/predict.py --input <folder>` reads it.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:          # `python benchmarks/generate_images.py` puts benchmarks/ on the path
    sys.path.insert(0, str(REPO))

from pipeline.batch.arrivals import scanned  # noqa: E402
from pipeline.formats.idx import read_array  # noqa: E402

log = logging.getLogger(__name__)

LABELS = "labels.csv"
TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def file_name(i: int) -> str:
    return f"scan-{i:06d}.png"


def is_complete(folder: Path, n: int) -> bool:
    """The labels file is written last: its presence with N rows means every image is there."""
    labels = folder / LABELS
    return labels.exists() and sum(1 for _ in labels.open()) == n + 1


def generate(source: Path, folder: Path, n: int, seed: int = 0) -> dict:
    images, labels = (read_array(source / name) for name in TEST_FILES)
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["file,label"]
    for i in range(n):
        index = i % len(images)
        scanned(images[index], np.random.default_rng([seed, i])).save(folder / file_name(i), format="PNG")
        rows.append(f"{file_name(i)},{int(labels[index])}")
    (folder / LABELS).write_text("\n".join(rows) + "\n")
    return {"n": n, "seed": seed, "folder": str(folder),
            "bytes": sum(p.stat().st_size for p in folder.glob("*.png"))}


def read_labels(folder: Path) -> dict[str, int]:
    """file name -> label, from labels.csv."""
    lines = (folder / LABELS).read_text().splitlines()[1:]
    return {name: int(label) for name, label in (line.split(",") for line in lines)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    log.info("%s", generate(REPO / "data" / "mnist", Path(args.out), args.n, args.seed))


if __name__ == "__main__":
    main()
