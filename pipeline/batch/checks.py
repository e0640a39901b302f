"""The record checks' verdict on one day: the blank-image policy (data.blank_images, as ingest applies it), the
day's validation report, and the one line that refuses the day (ingest's data.max_quarantine_fraction rule,
pipeline.record_checks.quarantine_failure). Only aggregates come back to the driver.
"""
from __future__ import annotations

import pyspark.sql.functions as F
from pyspark.sql import DataFrame

from pipeline.config import DataConfig
from pipeline.record_checks import EXAMPLES, FINDINGS, finding_text, quarantine_failure
from pipeline.schema import BATCH_IMAGES_SCHEMA, BATCH_QUARANTINE_SCHEMA
from pipeline.validation_report import BatchValidationReport, FindingSummary

BLANK = "blank_images"  # the one suspect-image finding that applies to a day (there is no train/test split)


def with_blank_policy(arrivals: DataFrame, policy: str) -> DataFrame:
    """Flag blank images (every pixel 0, e.g. an empty scan) and apply data.blank_images: quarantine sets the
    reason, drop sets `dropped`, fail and warn keep the record (the report decides)."""
    blank = F.col("reason").isNull() & (F.array_max("image") == 0)
    return (arrivals.withColumn("blank", blank)
            .withColumn("reason", F.coalesce(
                F.col("reason"), F.when(blank & F.lit(policy == "quarantine"), F.lit(FINDINGS[BLANK].reason))))
            .withColumn("dropped", blank & F.lit(policy == "drop")))


def valid_images(checked: DataFrame) -> DataFrame:
    return checked.filter(F.col("reason").isNull() & ~F.col("dropped")).select(*BATCH_IMAGES_SCHEMA.fieldNames())


def quarantined_records(checked: DataFrame) -> DataFrame:
    return checked.filter(F.col("reason").isNotNull()).select(*BATCH_QUARANTINE_SCHEMA.fieldNames())


def record_counts(checked: DataFrame) -> list[dict]:
    """Counts by (reason, blank, dropped), with each group's first record id: a handful of rows."""
    rows = (checked.groupBy("reason", "blank", "dropped")
            .agg(F.count(F.lit(1)).alias("count"), F.min("record_id").alias("first")).collect())
    return [row.asDict() for row in rows]


def build_report(counts: list[dict], data: DataConfig, ds: str, landing: str, kind: str) -> BatchValidationReport:
    records = sum(c["count"] for c in counts)
    bad = sorted((c for c in counts if c["reason"] is not None), key=lambda c: c["first"])
    reasons: dict[str, int] = {}
    for c in bad:
        reasons[c["reason"]] = reasons.get(c["reason"], 0) + c["count"]
    quarantined = sum(reasons.values())
    dropped = sum(c["count"] for c in counts if c["dropped"])
    report = BatchValidationReport(
        ds=ds, landing=landing, input_kind=kind, status="passed", records=records,
        valid=records - quarantined - dropped, quarantined=quarantined, dropped=dropped,
        quarantine_reasons=dict(sorted(reasons.items())),
        quarantined_fraction=quarantined / records if records else 0.0,
        max_quarantine_fraction=data.max_quarantine_fraction,
        findings={BLANK: blank_finding(counts, data.blank_images)}, error=None)
    error = refusal(report, bad)
    return {**report, "status": "failed" if error else "passed", "error": error}


def blank_finding(counts: list[dict], policy: str) -> FindingSummary:
    hits = sorted((c for c in counts if c["blank"]), key=lambda c: c["first"])
    count = sum(c["count"] for c in hits)
    return FindingSummary(policy=policy, count=count, by_split={"batch": count} if count else {},
                          examples=[c["first"] for c in hits[:EXAMPLES]])


def refusal(report: BatchValidationReport, bad: list[dict]) -> str | None:
    """Why the day must not be published, in one line naming the landing folder and the first bad record."""
    landing, blank = report["landing"], report["findings"][BLANK]
    if blank["policy"] == "fail" and blank["count"]:
        return (f"{landing}: data.{BLANK} is fail and {blank['count']} {FINDINGS[BLANK].description} were found, "
                f"the first {blank['examples'][0]}")
    first = f"; the first: {bad[0]['first']}: {bad[0]['reason']}" if bad else ""
    if report["valid"] == 0:
        return (f"{landing}: no usable records: all {report['records']} were quarantined ({report['quarantined']}) "
                f"or dropped ({report['dropped']}){first}")
    too_many = quarantine_failure(report["quarantined"], report["records"], report["quarantine_reasons"],
                                  report["max_quarantine_fraction"])
    return f"{landing}: {too_many}{first}" if too_many else None


def summary_line(report: BatchValidationReport) -> str:
    """One human line for the log."""
    reasons = "".join(f"; {r}: {n}" for r, n in report["quarantine_reasons"].items())
    return (f"validation {report['status']}: {report['valid']} valid of {report['records']}, quarantined "
            f"{report['quarantined']} ({report['quarantined_fraction']:.2%}, max "
            f"{report['max_quarantine_fraction']:.2%}), dropped {report['dropped']}; blank images: "
            f"{finding_text(report['findings'][BLANK])}{reasons}")
