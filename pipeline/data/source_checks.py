"""Ingest's checks of its source files as a whole: checksums against the input's SHA256SUMS, and records in every
split. (Reading the files is pipeline.formats' job; prediction reads them too, but makes neither check.)"""
from __future__ import annotations

import logging

from pipeline import storage
from pipeline.config import DataConfig
from pipeline.errors import PipelineError
from pipeline.formats import npz
from pipeline.formats.readers import Source

log = logging.getLogger(__name__)


def verify_checksums(input_dir: str, names: set[str], data: DataConfig, sources: list[Source],
                     scans: list[dict]) -> bool:
    """Compare with the SHA256SUMS file when the input has one; a mismatch names the file. True when verified."""
    if data.checksums_file not in names:
        return False
    expected = {}
    for line in storage.read_text(f"{input_dir.rstrip('/')}/{data.checksums_file}").splitlines():
        parts = line.split()
        if len(parts) == 2:
            expected[parts[1].lstrip("*")] = parts[0].lower()
    for source, scanned in zip(sources, scans, strict=True):
        want = expected.get(source.name)
        if want is None:
            log.warning("%s is not listed in %s: its checksum is recorded but not verified",
                        source.name, data.checksums_file)
        elif want != scanned["sha256"]:
            raise PipelineError(f"{source.name}: sha256 {scanned['sha256']} does not match {data.checksums_file} "
                                f"({want}): the file is corrupt or was altered")
    return True


def require_records(fmt: str, sources: list[Source], counts: dict[str, int]) -> None:
    """Every source split has records: a raw table without one would only fail later, in prepare or evaluate."""
    files = split_files(fmt, sources)
    for split, count in counts.items():
        if count == 0:
            raise PipelineError(f"{files[split]}: no records, so the {split} split would be empty")


def split_files(fmt: str, sources: list[Source]) -> dict[str, str]:
    """The file holding each split's records, as messages name it: {"train": "mnist_train.csv", ...}."""
    if fmt == "npz":
        return {split: f"{sources[0].name} ({x})" for split, (x, _) in npz.MEMBERS.items()}
    return {s.split: s.name for s in sources if s.role in ("images", "csv")}
