"""The EDA stage: read the curated splits, aggregate them in Spark, write summary, tables and figures atomically.

Extract (`read_curated`), transform (`pipeline.eda.aggregates`, all on the executors), load (`_publish`): only
aggregates and the handful of sample rows drawn in the grid reach the driver.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import time
from dataclasses import asdict
from typing import Any

from pyspark.sql import DataFrame, SparkSession

from pipeline import outputs, storage
from pipeline.config import PipelineConfig
from pipeline.eda import aggregates, figures
from pipeline.errors import PipelineError
from pipeline.fingerprint import fingerprint_of
from pipeline.layout import SPLITS, EdaFiles, Layout
from pipeline.locks import output_lock
from pipeline.rendering import to_png
from pipeline.result import StageResult
from pipeline.schema import CURATED_SCHEMA, IMAGE_HEIGHT, IMAGE_WIDTH, NUM_CLASSES
from pipeline.validation_report import ValidationReport, read_validation_report

log = logging.getLogger(__name__)

# Bump when the outputs change shape, so a rerun with new code redoes the stage instead of skipping it.
EDA_FORMAT_VERSION = 1
SAMPLE_SPLIT = "train"
TABLES = ("label_distribution", "pixel_stats", "histogram", "drift", "mean_images")
FIGURES = ("sample_grid", "label_distribution", "mean_images", "pixel_histogram")


def run_eda(spark: SparkSession, cfg: PipelineConfig, layout: Layout, force: bool = False) -> StageResult:
    """Describe the curated data under `layout.eda`; skip when it is already there for the same inputs and config."""
    curated_manifest = outputs.read_stage_output(layout.curated_manifest, "prepare")
    fingerprint = eda_fingerprint(curated_manifest, cfg)
    with output_lock(layout.eda, "eda"):
        if not force and outputs.is_complete(layout.eda_files.manifest, fingerprint):
            log.info("EDA already complete at %s (fingerprint %s): skipping; --force redoes it", layout.eda,
                     fingerprint)
            return headline(storage.read_json(layout.eda_files.summary), layout, skipped=True)
        started = time.monotonic()
        validation = _read_validation_report(layout)
        curated = aggregates.union_splits({s: read_curated(spark, layout.curated(s), s) for s in SPLITS})
        results = compute(curated, cfg)
        summary = build_summary(results, cfg, curated_manifest, validation, fingerprint)
        summary["seconds"] = round(time.monotonic() - started, 1)
        _publish(layout.eda, results, summary, cfg, fingerprint)
    log.info("EDA written to %s in %.1f s", layout.eda, summary["seconds"])
    return headline(summary, layout, skipped=False)


def eda_fingerprint(curated_manifest: dict, cfg: PipelineConfig) -> str:
    """The identity of the EDA output: the curated data it describes, the EDA config and the output format."""
    curated = curated_manifest.get("fingerprint") or json.dumps(curated_manifest, sort_keys=True, default=str)
    payload = {"curated": curated, "eda": asdict(cfg.eda), "data": asdict(cfg.data), "format": EDA_FORMAT_VERSION}
    return fingerprint_of(payload)


def read_curated(spark: SparkSession, path: str, split: str) -> DataFrame:
    """One curated split as (record_id, image, label), failing in one line when it is missing or malformed."""
    outputs.require_stage_output(path, "prepare")
    df = spark.read.parquet(path)
    missing = [name for name in CURATED_SCHEMA.fieldNames() if name not in df.columns]
    if missing:
        raise PipelineError(f"curated split '{split}' at {path} lacks column(s) {', '.join(missing)}")
    return df.select(*CURATED_SCHEMA.fieldNames())


def compute(curated: DataFrame, cfg: PipelineConfig) -> dict[str, Any]:
    """Every aggregate as plain Python rows, plus the sample rows for the grid."""
    summaries = aggregates.class_summaries(curated).cache()  # 30 rows, reused by three aggregates below
    distribution = aggregates.label_distribution(curated).cache()
    try:
        log.info("EDA: label distribution and per-class summaries (one pass over the images)")
        stats = aggregates.pixel_statistics(summaries)
        results = {
            "label_distribution": _rows(distribution),
            "imbalance": _rows(aggregates.imbalance(distribution)),
            "pixel_stats": _rows(stats),
            "mean_images": _rows(aggregates.mean_images(summaries)),
            "drift": _rows(aggregates.split_drift(distribution, stats, list(SPLITS))),
        }
        log.info("EDA: pixel histogram (%d bins)", cfg.eda.histogram_bins)
        results["histogram"] = _rows(aggregates.pixel_histogram(curated, cfg.eda.histogram_bins))
        log.info("EDA: %d sample training images (seed %d)", cfg.eda.sample_images, cfg.eda.seed)
        train = curated.where(curated.split == SAMPLE_SPLIT)
        results["samples"] = _rows(aggregates.sample_records(train, cfg.eda.seed, cfg.eda.sample_images))
        return results
    finally:
        summaries.unpersist()
        distribution.unpersist()


def _rows(df: DataFrame) -> list[dict]:
    """A small aggregate DataFrame to the driver as dicts (never called on a data set)."""
    return [row.asDict() for row in df.collect()]


def build_summary(results: dict, cfg: PipelineConfig, curated_manifest: dict, validation: ValidationReport | None,
                  fingerprint: str) -> dict:
    """summary.json: the figures a reader (and the report) needs, keyed by split and label."""
    return {
        "fingerprint": fingerprint,
        "curated_fingerprint": curated_manifest.get("fingerprint"),
        "eda_config": asdict(cfg.eda),
        "splits": list(SPLITS),
        "counts": {r["split"]: r["images"] for r in results["imbalance"]},
        "label_distribution": _distribution_summary(results),
        "pixel_stats": _nested(results["pixel_stats"], ("images", "mean", "std", "ink_share")),
        "histogram": _histogram_summary(results["histogram"], cfg.eda.histogram_bins),
        "drift": drift_summary(results["drift"], results["mean_images"]),
        "validation": validation_findings(validation),
        "sample": {"split": SAMPLE_SPLIT, "seed": cfg.eda.seed,
                   "records": [{"record_id": s["record_id"], "label": s["label"]} for s in results["samples"]]},
        "tables": {name: EdaFiles.table_name(name) for name in TABLES},
        "figures": {name: EdaFiles.figure_name(name) for name in FIGURES},
    }


def _distribution_summary(results: dict) -> dict:
    summary = {}
    for row in results["imbalance"]:
        split = row["split"]
        rows = [r for r in results["label_distribution"] if r["split"] == split]
        summary[split] = {
            "counts": {str(r["label"]): r["count"] for r in rows},
            "shares": {str(r["label"]): round(r["share"], 6) for r in rows},
            "classes": row["classes"],
            "largest_label": max(rows, key=lambda r: r["count"])["label"],
            "smallest_label": min(rows, key=lambda r: r["count"])["label"],
            "imbalance_ratio": round(row["imbalance_ratio"], 4),
        }
    return summary


def _nested(rows: list[dict], fields: tuple[str, ...]) -> dict:
    """{split: {label: {field: value}}} from (split, label, fields...) rows."""
    nested: dict[str, dict] = {}
    for row in rows:
        nested.setdefault(row["split"], {})[str(row["label"])] = {f: row[f] for f in fields}
    return nested


def _histogram_summary(rows: list[dict], bins: int) -> dict:
    background = {r["split"]: r["share"] for r in rows if r["bin"] == 0}
    return {"bins": bins, "range": [0.0, 1.0], "first_bin_share": background,
            "note": "first_bin_share: share of pixels in [0, 1/bins), almost all of it exact-zero background"}


def drift_summary(drift_rows: list[dict], mean_image_rows: list[dict]) -> dict:
    """The largest train/validation/test gaps: per-class share, per-class mean intensity, and mean image pixels."""
    by_share = max(drift_rows, key=lambda r: r["share_max_diff"])
    by_mean = max(drift_rows, key=lambda r: r["mean_max_diff"])
    split_means = {r["split"]: r["mean_image"] for r in mean_image_rows if r["label"] == aggregates.ALL
                   and r["split"] != aggregates.ALL}
    pairs = [(a, b) for i, a in enumerate(SPLITS) for b in SPLITS[i + 1:] if a in split_means and b in split_means]
    pixel_gaps = {f"{a}-{b}": max(abs(x - y) for x, y in zip(split_means[a], split_means[b], strict=True))
                  for a, b in pairs}
    return {
        "largest_share_difference": {"label": by_share["label"], "value": by_share["share_max_diff"],
                                     "shares": {s: by_share[f"{s}_share"] for s in SPLITS}},
        "largest_mean_intensity_difference": {"label": by_mean["label"], "value": by_mean["mean_max_diff"],
                                              "means": {s: by_mean[f"{s}_mean"] for s in SPLITS}},
        "mean_image_max_pixel_difference": pixel_gaps,
    }


def validation_findings(report: ValidationReport | None) -> dict:
    """Duplicates and quarantined rows from ingest's validation report, carried into the summary."""
    if report is None:
        return {"report_found": False}
    duplicates, quarantined = report["duplicate_images"], report["quarantined"]
    return {"report_found": True, "status": report["status"],
            "duplicates": sum(duplicates.values()), "duplicates_by_kind": duplicates,
            "quarantined": sum(quarantined.values()), "quarantined_by_split": quarantined,
            "quarantined_fraction": report["quarantined_fraction"],
            "quarantine_reasons": report["quarantine_reasons"]}


def headline(summary: dict, layout: Layout, skipped: bool) -> StageResult:
    """The stage's result: where the EDA is and the few figures worth printing."""
    return StageResult(skipped, {"eda": layout.eda}, counts=summary["counts"], details={
        "imbalance_ratio": {s: d["imbalance_ratio"] for s, d in summary["label_distribution"].items()},
        "largest_share_difference": summary["drift"]["largest_share_difference"],
        "sample_record_ids": [r["record_id"] for r in summary["sample"]["records"]]})


def _read_validation_report(layout: Layout) -> ValidationReport | None:
    """Ingest's validation report, if it wrote one (EDA still runs without it); one of another shape is refused."""
    if not storage.exists(layout.validation_report):
        log.warning("no validation report at %s: summary will not carry duplicates/quarantine counts",
                    layout.validation_report)
        return None
    return read_validation_report(layout.validation_report)


def _publish(path: str, results: dict, summary: dict, cfg: PipelineConfig, fingerprint: str) -> None:
    """Write tables, figures, summary and (last) manifest into a temp folder moved into place at once."""
    with outputs.publishing(path) as tmp_dir:
        tmp = EdaFiles(tmp_dir)
        for name, text in tables(results).items():
            storage.write_text(tmp.table(name), text)
        for name, png in render_figures(results, summary, cfg).items():
            storage.write_bytes(tmp.figure(name), png)
        storage.write_json(tmp.summary, summary)
        storage.write_json(tmp.manifest, {
            "fingerprint": fingerprint, "curated_fingerprint": summary["curated_fingerprint"],
            "eda_config": asdict(cfg.eda), "format_version": EDA_FORMAT_VERSION,
            "files": [EdaFiles.SUMMARY, *summary["tables"].values(), *summary["figures"].values()]})


def tables(results: dict) -> dict[str, str]:
    """The CSV tables, by name."""
    drift_columns = ["label", *[f"{s}_share" for s in SPLITS], "share_max_diff", *[f"{s}_mean" for s in SPLITS],
                     "mean_max_diff"]
    mean_rows = [{"split": r["split"], "label": r["label"], "images": r["images"],
                  **{f"p{i}": v for i, v in enumerate(r["mean_image"])}} for r in results["mean_images"]]
    pixels = len(results["mean_images"][0]["mean_image"]) if results["mean_images"] else 0
    return {
        "label_distribution": _csv(results["label_distribution"], ["split", "label", "count", "share"]),
        "pixel_stats": _csv(results["pixel_stats"], ["split", "label", "images", "mean", "std", "ink_share"]),
        "histogram": _csv(results["histogram"], ["split", "bin", "lower", "upper", "count", "share"]),
        "drift": _csv(results["drift"], drift_columns),
        "mean_images": _csv(mean_rows, ["split", "label", "images", *[f"p{i}" for i in range(pixels)]]),
    }


def _csv(rows: list[dict], columns: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def render_figures(results: dict, summary: dict, cfg: PipelineConfig) -> dict[str, bytes]:
    """The four PNG figures, by name."""
    counts = {split: {int(k): v for k, v in d["counts"].items()} for split, d in summary["label_distribution"].items()}
    counts = {split: counts[split] for split in SPLITS if split in counts}
    train_means = {int(r["label"]): r["mean_image"] for r in results["mean_images"]
                   if r["split"] == SAMPLE_SPLIT and r["label"] != aggregates.ALL}
    shares = {split: [r["share"] for r in results["histogram"] if r["split"] == split] for split in counts}
    return {
        "sample_grid": to_png(figures.sample_grid(results["samples"], IMAGE_HEIGHT, IMAGE_WIDTH, cfg.eda.seed)),
        "label_distribution": to_png(figures.label_distribution_chart(counts, NUM_CLASSES)),
        "mean_images": to_png(figures.mean_images_grid(train_means, counts.get(SAMPLE_SPLIT, {}),
                                                               IMAGE_HEIGHT, IMAGE_WIDTH)),
        "pixel_histogram": to_png(figures.pixel_histogram_chart(shares, cfg.eda.histogram_bins)),
    }
