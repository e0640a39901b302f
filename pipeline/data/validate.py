"""Record checks: why a parsed record cannot be used (the quarantine reason), and the counts for the report.

Structural problems (a file that is not what it claims) stop ingest earlier, in `readers.plan_tasks`; here every
record is judged on its own, and only aggregates come back to the driver.
"""
from __future__ import annotations

import logging

import pyspark.sql.functions as F
from pyspark.sql import Column, DataFrame

from pipeline.errors import PipelineError
from pipeline.schema import QUARANTINE_SCHEMA, RAW_SCHEMA

log = logging.getLogger(__name__)


def reject_reason(num_classes: int, image_bytes: int) -> Column:
    """The first reason a record is unusable, or null: what the reader found, then label and image checks."""
    return F.coalesce(
        F.col("problem"),
        F.when(F.col("label").isNull(), F.lit("missing label")),
        F.when(~F.col("label").between(0, num_classes - 1), F.lit(f"label outside 0-{num_classes - 1}")),
        F.when(F.col("image").isNull(), F.lit("missing image")),
        F.when(F.length("image") != image_bytes, F.lit(f"image is not {image_bytes} bytes")),
    )


def with_reject_reason(df: DataFrame, num_classes: int, image_bytes: int) -> DataFrame:
    return df.withColumn("reason", reject_reason(num_classes, image_bytes))


def valid_records(df: DataFrame) -> DataFrame:
    """Records that passed every check, in the raw table's schema."""
    return df.filter(F.col("reason").isNull()).select(*RAW_SCHEMA.fieldNames())


def quarantined_records(df: DataFrame) -> DataFrame:
    return df.filter(F.col("reason").isNotNull()).select(*QUARANTINE_SCHEMA.fieldNames())


def record_counts(df: DataFrame) -> list[dict]:
    """Counts by (split, label, reason): at most a few hundred rows, whatever the data size."""
    rows = df.groupBy("source_split", "label", "reason").count().collect()
    return [row.asDict() for row in rows]


def duplicate_counts(valid: DataFrame) -> dict:
    """Exact duplicate images: extra copies within each split, and test records whose image is also in train."""
    per_image = valid.groupBy("image").agg(
        F.sum((F.col("source_split") == "train").cast("long")).alias("train"),
        F.sum((F.col("source_split") == "test").cast("long")).alias("test"))
    row = per_image.agg(
        F.sum(F.greatest(F.col("train") - 1, F.lit(0))).alias("within_train"),
        F.sum(F.greatest(F.col("test") - 1, F.lit(0))).alias("within_test"),
        F.sum(F.when((F.col("train") > 0) & (F.col("test") > 0), F.col("test")).otherwise(0)).alias("test_in_train"),
    ).first()
    return {key: int(row[key] or 0) for key in ("within_train", "within_test", "test_in_train")}


def build_report(counts: list[dict], duplicates: dict, max_fraction: float, num_classes: int) -> dict:
    """The validation report: totals, quarantine reasons, label counts and class balance per split, duplicates."""
    splits = sorted({c["source_split"] for c in counts})
    total = sum(c["count"] for c in counts)
    bad = [c for c in counts if c["reason"] is not None]
    quarantined = sum(c["count"] for c in bad)
    label_counts = {s: {str(label): 0 for label in range(num_classes)} for s in splits}
    for c in counts:
        if c["reason"] is None:
            label_counts[c["source_split"]][str(c["label"])] += c["count"]
    reasons: dict[str, int] = {}
    for c in bad:
        reasons[c["reason"]] = reasons.get(c["reason"], 0) + c["count"]
    fraction = quarantined / total if total else 0.0
    return {
        "status": "passed" if fraction <= max_fraction else "failed",
        "records": {s: sum(c["count"] for c in counts if c["source_split"] == s) for s in splits},
        "valid": {s: sum(label_counts[s].values()) for s in splits},
        "quarantined": {s: sum(c["count"] for c in bad if c["source_split"] == s) for s in splits},
        "quarantine_reasons": dict(sorted(reasons.items())),
        "quarantined_fraction": fraction,
        "max_quarantine_fraction": max_fraction,
        "label_counts": label_counts,
        "class_balance": {s: class_balance(label_counts[s]) for s in splits},
        "duplicate_images": duplicates,
    }


def class_balance(counts: dict[str, int]) -> dict:
    """Smallest and largest class and their ratio (1.0 is perfectly balanced)."""
    low = min(counts, key=lambda k: (counts[k], int(k)))
    high = max(counts, key=lambda k: (counts[k], -int(k)))
    return {"smallest": {"label": int(low), "count": counts[low]},
            "largest": {"label": int(high), "count": counts[high]},
            "ratio": round(counts[low] / counts[high], 4) if counts[high] else 0.0}


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
    d = report["duplicate_images"]
    lines.append(f"  exact duplicate images: {d['within_train']} extra in train, {d['within_test']} extra in test, "
                 f"{d['test_in_train']} test images also in train (counted, kept)")
    return lines


def enforce_threshold(report: dict, report_path: str) -> None:
    """Fail when more records were quarantined than config tolerates."""
    if report["status"] == "failed":
        top = ", ".join(f"{r}: {n}" for r, n in sorted(report["quarantine_reasons"].items(), key=lambda x: -x[1])[:3])
        total = sum(report["records"].values())
        raise PipelineError(f"{sum(report['quarantined'].values())} of {total} records failed record checks "
                            f"({report['quarantined_fraction']:.4%} > data.max_quarantine_fraction "
                            f"{report['max_quarantine_fraction']}): {top}; see {report_path}")
