"""The validation report ingest writes next to the raw table, declared once: ingest builds it
(`pipeline.record_checks.build_report`), EDA reads it. Stages do not import each other, so its structure lives
here, below them; a reader takes the keys as declared instead of guessing at them.
"""
from __future__ import annotations

from typing import TypedDict

from pipeline import outputs
from pipeline.errors import PipelineError


class DuplicateImages(TypedDict):
    """Exact duplicate images among the records that passed the record checks."""
    within_train: int       # extra copies within the train split
    within_test: int        # extra copies within the test split
    test_in_train: int      # test records whose image is also a training image


class ClassBalance(TypedDict):
    smallest: dict          # {"label": int, "count": int}
    largest: dict
    ratio: float            # smallest / largest count; 1.0 is perfectly balanced


class FindingSummary(TypedDict):
    """Suspect images of one kind (data.blank_images, data.test_images_in_train) and what the policy did."""
    policy: str             # fail | warn | quarantine | drop
    count: int
    by_split: dict[str, int]
    examples: list[str]     # record ids, the first found first


class ValidationReport(TypedDict):
    """validation_report.json; every per-split mapping is keyed by source split (train, test)."""
    status: str                          # "passed" or "failed"
    records: dict[str, int]              # records read
    valid: dict[str, int]                # passed every check and not dropped: the raw table
    quarantined: dict[str, int]          # moved to the quarantine table
    dropped: dict[str, int]              # removed by a drop policy, kept nowhere
    quarantine_reasons: dict[str, int]   # reason -> records
    quarantined_fraction: float          # of all records read
    max_quarantine_fraction: float       # data.max_quarantine_fraction when ingest ran
    label_counts: dict[str, dict[str, int]]   # split -> label -> valid records
    class_balance: dict[str, ClassBalance]
    duplicate_images: DuplicateImages
    findings: dict[str, FindingSummary]  # policy key in the data config -> what was found
    error: str | None                    # why ingest stopped; None when it published the raw table


KEYS = ValidationReport.__required_keys__


class BatchValidationReport(TypedDict):
    """validation_report.json of one scheduled day (layout.BatchFiles.validation_report), written by score_batch
    (pipeline.batch) with the same record checks and data.* policies as ingest; a day has no splits."""
    ds: str
    landing: str                         # the day's landing folder
    input_kind: str                      # images (PNG/JPEG files) | idx | npz | csv
    status: str                          # "passed" or "failed"
    records: int                         # files or records that arrived
    valid: int                           # passed every check and not dropped: the day's images partition
    quarantined: int                     # the day's quarantine partition
    dropped: int                         # removed by a drop policy, kept nowhere
    quarantine_reasons: dict[str, int]   # reason -> records
    quarantined_fraction: float          # of all records that arrived
    max_quarantine_fraction: float       # data.max_quarantine_fraction when the day was scored
    findings: dict[str, FindingSummary]  # blank_images: what data.blank_images found and did (by_split: {"batch"})
    error: str | None                    # why the day was refused; None when it was published


def read_validation_report(path: str) -> ValidationReport:
    """The report at `path`, refused in one line when it is missing, damaged or lacks a declared key."""
    report = outputs.read_stage_output(path, "ingest")
    missing = sorted(KEYS - set(report))
    if missing:
        raise PipelineError(f"validation report {path} lacks {', '.join(missing)}: it was not written by this "
                            f"version of ingest; rerun {outputs.job_for('ingest')} --force")
    return report
