"""The tests' tiny world: the first few thousand images of the bundled MNIST as IDX files of its own names, with
their SHA256SUMS, so that ingest reads them with nothing but `paths.input` changed (conf/profiles/test.yaml is the
profile made for them). Only tests that prove something of the full data set (counts, checksums, split sizes) read
all 70,000 images."""
from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

from benchmarks.generate_idx import SOURCE_FILES, idx_header
from pipeline.config import REPO_ROOT
from pipeline.formats.idx import read_array

MNIST = REPO_ROOT / "data" / "mnist"
TRAIN_IMAGES, TEST_IMAGES = 3000, 1000
PROFILE = "test"
VALIDATION_IMAGES = 300     # conf/profiles/test.yaml prepare.validation_size
COUNTS = {"train": TRAIN_IMAGES - VALIDATION_IMAGES, "validation": VALIDATION_IMAGES, "test": TEST_IMAGES}


def write_tiny_world(folder: Path) -> Path:
    """The first TRAIN_IMAGES training and TEST_IMAGES test images and labels as gzipped IDX files in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    sums = []
    for split, count in (("train", TRAIN_IMAGES), ("test", TEST_IMAGES)):
        for name in SOURCE_FILES[split]:
            array = read_array(MNIST / name)[:count]
            payload = gzip.compress(idx_header(array.shape) + array.tobytes(), mtime=0)
            (folder / name).write_bytes(payload)
            sums.append(f"{hashlib.sha256(payload).hexdigest()}  {name}")
    (folder / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    return folder


def tiny_overrides(root: Path, input_dir: Path, *extra: str) -> list[str]:
    """`--set` values for a run of the test profile on the tiny world, every output under `root`."""
    return [f"paths.input={input_dir}", f"paths.data={root / 'data'}", f"paths.runs={root / 'runs'}",
            f"paths.mlflow={root / 'mlflow'}", *extra]
