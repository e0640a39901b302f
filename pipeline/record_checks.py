"""The record checks of ingest, shared with the scheduled batches (pipeline.batch): why a parsed record cannot be
used (the quarantine reason, from formats.records), suspect images handled by their data.* policy, and the counts
for the report.

Structural problems (a file that is not what it claims) stop ingest earlier, in `formats.readers.plan_tasks`;
here every record is judged on its own, and only aggregates come back to the driver. Images are compared by a 32-byte
SHA-256 computed once per record, so no shuffle or join ever carries the pixels.

Suspect images pass the record checks but should not reach training; data.<finding> says what to do with them:
fail (ingest stops), warn (logged, kept), quarantine (moved to the quarantine table, counted against
data.max_quarantine_fraction) or drop (removed and counted, kept nowhere).
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyspark.sql.functions as F
from pyspark.sql import Column, DataFrame

from pipeline.config import DataConfig
from pipeline.schema import NUM_CLASSES, QUARANTINE_SCHEMA
from pipeline.validation_report import ClassBalance, DuplicateImages, FindingSummary, ValidationReport

log = logging.getLogger(__name__)

EXAMPLES = 5


@dataclass(frozen=True)
class Finding:
    flag: str           # boolean column marking the records
    description: str    # plural, for messages: "3 blank images (every pixel 0)"
    reason: str         # quarantine reason under the quarantine policy


# Keyed by their policy's name in DataConfig.
FINDINGS = {
    "blank_images": Finding("blank", "blank images (every pixel 0)", "blank image"),
    "test_images_in_train": Finding("in_test", "training images that are also test images", "image also in test"),
}


def image_checks(parsed: pa.RecordBatch) -> tuple[pa.Array, pa.Array]:
    """(image_hash, blank) of parsed records (formats.records): the SHA-256 of each image's bytes, and whether a
    record that passed the record checks has every pixel 0. All that needs the pixels, computed once, in the
    worker that parsed them."""
    image = parsed.column("image")
    offsets = np.frombuffer(image.buffers()[1], np.int32, len(image) + 1, image.offset * 4)
    pixels = np.frombuffer(image.buffers()[2] or b"", np.uint8)
    present = image.is_valid().to_numpy(zero_copy_only=False)
    view = memoryview(pixels)
    hashes = [hashlib.sha256(view[offsets[i]:offsets[i + 1]]).digest() if present[i] else None
              for i in range(len(image))]
    usable = pc.is_null(parsed.column("reason")).to_numpy(zero_copy_only=False)
    blank = usable & present & ~_any_pixel_lit(pixels, offsets)
    return pa.array(hashes, pa.binary()), pa.array(blank, pa.bool_())


def _any_pixel_lit(pixels: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per image, whether any byte is not 0: one vectorised pass when the images are all one size, as a reader's
    always are."""
    sizes = np.diff(offsets)
    if len(sizes) and sizes[0] > 0 and (sizes == sizes[0]).all():
        return pixels[offsets[0]:offsets[-1]].reshape(len(sizes), sizes[0]).any(axis=1)
    return np.array([pixels[start:end].any() for start, end in zip(offsets[:-1], offsets[1:], strict=True)],
                    dtype=bool)


def image_copies(checked: DataFrame) -> DataFrame:
    """(image_hash, train, test): each distinct image of the records that passed record checks, copies per split."""
    return (checked.filter(F.col("reason").isNull())
            .groupBy("image_hash")
            .agg(F.sum((F.col("source_split") == "train").cast("long")).alias("train"),
                 F.sum((F.col("source_split") == "test").cast("long")).alias("test")))


def with_policies(checked: DataFrame, copies: DataFrame, blank_policy: str, in_test_policy: str) -> DataFrame:
    """Flag training records whose image is a test image, then apply both policies: quarantine sets the reason,
    drop sets `dropped`; fail and warn keep the record (the report's counts decide). The test split is never
    altered. A blank image removed by its own policy is not also counted as a test image."""
    # The test images' hashes are small (32 bytes each): broadcast, so the records never shuffle.
    test_images = copies.filter(F.col("test") > 0).select("image_hash", F.lit(True).alias("is_test_image"))
    blank_removed = F.col("blank") & F.lit(blank_policy in ("quarantine", "drop"))
    in_test = ((F.col("source_split") == "train") & F.col("reason").isNull() & ~blank_removed
               & F.coalesce(F.col("is_test_image"), F.lit(False)))
    return (checked.join(F.broadcast(test_images), "image_hash", "left")
            .withColumn("in_test", in_test)
            .drop("is_test_image")
            .withColumn("reason", F.coalesce(F.col("reason"), _quarantine_reason("blank_images", blank_policy),
                                             _quarantine_reason("test_images_in_train", in_test_policy)))
            .withColumn("dropped", (F.col("blank") & F.lit(blank_policy == "drop"))
                        | (F.col("in_test") & F.lit(in_test_policy == "drop"))))


def _quarantine_reason(key: str, policy: str) -> Column:
    """The finding's quarantine reason for flagged records under the quarantine policy, else null."""
    finding = FINDINGS[key]
    return F.when(F.col(finding.flag) & F.lit(policy == "quarantine"), F.lit(finding.reason))


def quarantined_records(df: DataFrame) -> DataFrame:
    return df.filter(F.col("reason").isNotNull()).select(*QUARANTINE_SCHEMA.fieldNames())


def record_counts(df: DataFrame) -> list[dict]:
    """Counts by (split, label, reason, findings) with each group's first record: a few hundred rows at most."""
    rows = (df.groupBy("source_split", "label", "reason", "blank", "in_test", "dropped")
            .agg(F.count(F.lit(1)).alias("count"), F.min(F.struct("source_index", "record_id")).alias("first"))
            .collect())
    return [{**row.asDict(), "first": (row["first"]["source_index"], row["first"]["record_id"])} for row in rows]


def duplicate_counts(copies: DataFrame) -> DuplicateImages:
    """Exact duplicate images: extra copies within each split, and test records whose image is also in train."""
    row = copies.agg(
        F.sum(F.greatest(F.col("train") - 1, F.lit(0))).alias("within_train"),
        F.sum(F.greatest(F.col("test") - 1, F.lit(0))).alias("within_test"),
        F.sum(F.when((F.col("train") > 0) & (F.col("test") > 0), F.col("test")).otherwise(0)).alias("test_in_train"),
    ).first()
    return DuplicateImages(within_train=int(row["within_train"] or 0), within_test=int(row["within_test"] or 0),
                           test_in_train=int(row["test_in_train"] or 0))


def build_report(counts: list[dict], duplicates: DuplicateImages, data: DataConfig,
                 files: dict[str, str]) -> ValidationReport:
    """The validation report (pipeline.validation_report): totals, quarantine reasons, label counts and class
    balance per split, duplicates, suspect-image findings, and `error`: why ingest must stop (null when it may
    publish)."""
    splits = sorted({c["source_split"] for c in counts})
    total = sum(c["count"] for c in counts)
    bad = [c for c in counts if c["reason"] is not None]
    quarantined = sum(c["count"] for c in bad)
    label_counts = {s: {str(label): 0 for label in range(NUM_CLASSES)} for s in splits}
    for c in counts:
        if c["reason"] is None and not c["dropped"]:
            label_counts[c["source_split"]][str(c["label"])] += c["count"]
    reasons: dict[str, int] = {}
    for c in bad:
        reasons[c["reason"]] = reasons.get(c["reason"], 0) + c["count"]
    report = {
        "records": {s: sum(c["count"] for c in counts if c["source_split"] == s) for s in splits},
        "valid": {s: sum(label_counts[s].values()) for s in splits},
        "quarantined": {s: sum(c["count"] for c in bad if c["source_split"] == s) for s in splits},
        "dropped": {s: sum(c["count"] for c in counts if c["dropped"] and c["source_split"] == s) for s in splits},
        "quarantine_reasons": dict(sorted(reasons.items())),
        "quarantined_fraction": quarantined / total if total else 0.0,
        "max_quarantine_fraction": data.max_quarantine_fraction,
        "label_counts": label_counts,
        "class_balance": {s: class_balance(label_counts[s]) for s in splits},
        "duplicate_images": duplicates,
        "findings": {key: finding_summary(counts, FINDINGS[key].flag, getattr(data, key)) for key in FINDINGS},
    }
    error = failure(report, files)
    return ValidationReport(status="failed" if error else "passed", **report, error=error)


def finding_summary(counts: list[dict], flag: str, policy: str) -> FindingSummary:
    """Policy, count (total and per split) and example record ids (the first is the finding's first record)."""
    hits = [c for c in counts if c[flag]]
    by_split: dict[str, int] = {}
    for c in hits:
        by_split[c["source_split"]] = by_split.get(c["source_split"], 0) + c["count"]
    # Train before test, then file order: each (split, label) group contributes its first record.
    firsts = sorted((c["source_split"] != "train", c["first"]) for c in hits)
    return FindingSummary(policy=policy, count=sum(by_split.values()), by_split=dict(sorted(by_split.items())),
                          examples=[record_id for _, (_, record_id) in firsts[:EXAMPLES]])


def failure(report: dict, files: dict[str, str]) -> str | None:
    """Why ingest must stop, in one line: a finding whose policy is fail, a split left without records, or more
    records quarantined than data.max_quarantine_fraction tolerates. None when it may publish."""
    for key, finding in FINDINGS.items():
        found = report["findings"][key]
        if found["policy"] == "fail" and found["count"]:
            return (f"data.{key} is fail and {found['count']} {finding.description} were found, the first "
                    f"{found['examples'][0]}")
    for split, valid in report["valid"].items():
        if valid == 0:
            return (f"{files[split]}: no usable {split} records: all {report['records'][split]} were quarantined "
                    f"({report['quarantined'][split]}) or dropped ({report['dropped'][split]})")
    return quarantine_failure(sum(report["quarantined"].values()), sum(report["records"].values()),
                              report["quarantine_reasons"], report["max_quarantine_fraction"])


def quarantine_failure(quarantined: int, records: int, reasons: dict[str, int], max_fraction: float) -> str | None:
    """Why too many records were quarantined (data.max_quarantine_fraction), naming the top reasons; else None."""
    fraction = quarantined / records if records else 0.0
    if fraction <= max_fraction:
        return None
    top = ", ".join(f"{r}: {n}" for r, n in sorted(reasons.items(), key=lambda x: -x[1])[:3])
    return (f"{quarantined} of {records} records failed record checks ({fraction:.4%} > "
            f"data.max_quarantine_fraction {max_fraction}): {top}")
def class_balance(counts: dict[str, int]) -> ClassBalance:
    """Smallest and largest class and their ratio (1.0 is perfectly balanced)."""
    low = min(counts, key=lambda k: (counts[k], int(k)))
    high = max(counts, key=lambda k: (counts[k], -int(k)))
    return ClassBalance(smallest={"label": int(low), "count": counts[low]},
                        largest={"label": int(high), "count": counts[high]},
                        ratio=round(counts[low] / counts[high], 4) if counts[high] else 0.0)


def summary_lines(report: dict) -> list[str]:
    """A few human lines for the log."""
    lines = [f"validation {report['status']}: " + ", ".join(
        f"{s} {report['valid'][s]} valid / {report['records'][s]}" for s in report["records"])
        + f"; quarantined {sum(report['quarantined'].values())} ({report['quarantined_fraction']:.4%}, "
        f"max {report['max_quarantine_fraction']:.4%})"]
    lines += [f"  quarantine reason '{r}': {n}" for r, n in report["quarantine_reasons"].items()]
    lines += [f"  class balance {s}: smallest {b['smallest']['label']} ({b['smallest']['count']}), largest "
              f"{b['largest']['label']} ({b['largest']['count']}), ratio {b['ratio']}"
              for s, b in report["class_balance"].items()]
    if report["dropped"] and any(report["dropped"].values()):
        lines.append("  dropped: " + ", ".join(f"{s} {n}" for s, n in report["dropped"].items()))
    d = report["duplicate_images"]
    lines.append(f"  exact duplicate images among records that passed record checks: {d['within_train']} extra in "
                 f"train, {d['within_test']} extra in test, {d['test_in_train']} test images also in train")
    lines += [f"  {FINDINGS[key].description}: {finding_text(found)}, data.{key} {found['policy']}"
              for key, found in report["findings"].items()]
    return lines


def finding_text(found: dict) -> str:
    """'3 (train 2, test 1), e.g. a:2, a:5, b:3' or '0'."""
    if not found["count"]:
        return "0"
    splits = ", ".join(f"{s} {n}" for s, n in found["by_split"].items())
    return f"{found['count']} ({splits}), e.g. {', '.join(found['examples'])}"


def warning_lines(report: dict) -> list[str]:
    """One line per finding kept under the warn policy: the records stay in the raw table."""
    return [f"{FINDINGS[key].description} kept because data.{key} is warn: {finding_text(found)}"
            for key, found in report["findings"].items() if found["policy"] == "warn" and found["count"]]
