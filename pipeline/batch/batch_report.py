"""The batch report of one scheduled day: report.md and a self-contained report.html beside the day's drift.json.

It shows the model name and version that scored the day, the counts (images, quarantined), the drift verdict and
four figures: predicted classes, confidence histogram, drift statistics against the training baseline (with their
table) and the least confident images. Everything is read from the day's outputs (scoring.json, the predictions
and images partitions, drift.json when the drift check ran); only aggregates and the few images of the grid reach
the driver. The drift check fails its job after writing drift.json, so this report runs after it either way.

Published whole or not at all: figures, Markdown and HTML are all rendered in memory first; then the figures
folder moves into place in one move and the two pages are written, each atomically.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession

from pipeline import outputs, storage
from pipeline.batch import report_figures
from pipeline.batch.drift import read_batch_table, scored_facts
from pipeline.config import PipelineConfig
from pipeline.day_publication import scored_day
from pipeline.layout import BatchFiles, BatchReportFiles, Layout
from pipeline.locks import output_lock
from pipeline.rendering import markdown_to_html, to_png
from pipeline.result import StageResult
from pipeline.schema import BATCH_PREDICTIONS_SCHEMA
from pipeline.scoring import CONFIDENCE_BINS, confidence_bin

log = logging.getLogger(__name__)

DRIFT_JOB = "check_drift"


@dataclass(frozen=True)
class DayOutputs:
    """What the report shows for one day, loaded from that day's outputs."""
    ds: str
    scoring: dict
    drift: dict | None                 # None when the drift check has not run for the day
    class_counts: dict[int, int]
    confidence_counts: list[int]       # CONFIDENCE_BINS equal bins over [0, 1]
    low_confidence: int                # predictions below drift.low_confidence
    least_confident: list[dict]        # record_id, source_file, prediction, confidence, image
    model_name: str                    # what scored the day
    model_version: str

    @property
    def scored(self) -> int:
        return sum(self.class_counts.values())


def confidence_counts(predictions: DataFrame) -> list[int]:
    """Predictions per confidence bin (score.confidence_bin), for a day whose scoring.json does not hold them."""
    counts = {r["bin"]: r["count"] for r in predictions.groupBy(confidence_bin().alias("bin")).count().collect()}
    return [int(counts.get(b, 0)) for b in range(CONFIDENCE_BINS)]


def least_confident(predictions: DataFrame, images: DataFrame, count: int) -> list[dict]:
    """The `count` least confident predictions with their images (ties broken by record id)."""
    if count == 0:
        return []
    worst = predictions.orderBy("confidence", "record_id").limit(count)
    rows = (worst.select("record_id", "source_file", "prediction", "confidence")
            .join(images.select("record_id", "image"), "record_id").orderBy("confidence", "record_id").collect())
    return [row.asDict() for row in rows]


def load_day(spark: SparkSession, cfg: PipelineConfig, batch: BatchFiles) -> DayOutputs:
    """The day's facts as its scoring computed them (scoring.json), its drift verdict, and its least confident
    images (the only rows read)."""
    scoring = scored_day(batch)
    facts = scored_facts(spark, batch, scoring, cfg.drift.low_confidence)
    predictions = read_batch_table(spark, batch.predictions, BATCH_PREDICTIONS_SCHEMA.fieldNames())
    bins = (scoring.get("confidence") or {}).get("bins") or confidence_counts(predictions)
    images = read_batch_table(spark, batch.images, ["record_id", "image"])
    drift = outputs.read_stage_output(batch.drift, DRIFT_JOB) if storage.exists(batch.drift) else None
    return DayOutputs(batch.ds, scoring, drift, facts.predicted, bins, facts.unsure,
                      least_confident(predictions, images, cfg.batch.low_confidence_examples),
                      facts.model_name, facts.model_version)


def verdict_text(day: DayOutputs) -> str:
    rerun = f"`{outputs.job_for(DRIFT_JOB)} --ds {day.ds}`"
    if day.drift is None:
        return f"**not checked**: no drift check for this day yet (run {rerun})"
    checked = (day.drift.get("model_version"), day.drift.get("images"))
    if checked != (day.model_version, day.scored):
        # The day was scored again (a rerun, a backfill, a new champion) after its drift check.
        return (f"**stale**: the drift check saw model version {checked[0]} and {checked[1]} images, not this "
                f"scoring; rerun {rerun}. It said: {day.drift['verdict']}")
    if day.drift["flagged"]:
        return f"**DRIFT** (drift.on_drift = {day.drift['on_drift']}): {day.drift['verdict']}"
    return "**no drift**: every statistic within its threshold"


def render_figures(day: DayOutputs, cfg: PipelineConfig) -> dict[str, bytes]:
    """PNG bytes by figure key; the drift figure only when the drift check ran."""
    training = ({int(k): v for k, v in day.drift["class_shares"]["training"].items()} if day.drift else None)
    figures = {"class_distribution": report_figures.class_distribution_chart(day.class_counts, training),
               "confidence": report_figures.confidence_histogram(day.confidence_counts, cfg.drift.low_confidence)}
    if day.drift:
        figures["drift"] = report_figures.drift_chart(day.drift["statistics"])
    if day.least_confident:
        figures["least_confident"] = report_figures.lowest_confidence_grid(day.least_confident)
    return {key: to_png(fig) for key, fig in figures.items()}


def report_markdown(day: DayOutputs, cfg: PipelineConfig, figures: Sequence[str]) -> str:
    """The report's Markdown; it links each figure in `figures` where BatchFiles puts it."""
    def figure(key: str, alt: str) -> str:
        return f"![{alt}]({BatchReportFiles.figure_link(key)})" if key in figures else "(no figure)"

    scoring = day.scoring
    sections = [
        f"# Batch report: {day.ds}",
        f"Model `{day.model_name}` version `{day.model_version}` scored "
        f"{day.scored:,} images of {day.ds}; {_count(scoring, 'quarantined')} quarantined by the checks.\n\n"
        f"Drift verdict: {verdict_text(day)}",
        "## Predicted classes\n\n" + figure("class_distribution", "predicted classes"),
        f"## Confidence\n\nPredictions below drift.low_confidence = {cfg.drift.low_confidence:g}: "
        f"{day.low_confidence:,} of {day.scored:,}.\n\n" + figure("confidence", "confidence histogram"),
        "## Drift against the training data\n\n" + drift_section(day, figure),
        "## Least confident images\n\n" + figure("least_confident", "least confident images"),
    ]
    return "\n\n".join(sections) + "\n"


def drift_section(day: DayOutputs, figure) -> str:
    if day.drift is None:
        return verdict_text(day)
    baseline = day.drift["baseline"]
    intro = (f"Baseline: {baseline['images']:,} training images ({baseline['source']}); ink is a pixel at or above "
             f"{baseline['ink_threshold']:g}. The allowed change of the two distances includes what sampling alone "
             f"gives {day.drift['images']:,} images.")
    return "\n\n".join([intro, drift_table(day.drift["statistics"]), figure("drift", "drift statistics")])


def drift_table(statistics: Sequence[Mapping]) -> str:
    rows = ["| statistic | what it measures | training | batch | change | allowed | moved |",
            "|---|---|---|---|---|---|---|"]
    for s in statistics:
        baseline = "-" if s["baseline"] is None else f"{s['baseline']:.4f}"
        change = "-" if s["kind"] == "ceiling" else f"{s['change']:+.4f}"
        allowed = {"change": f"±{s['threshold']:.4f}", "ceiling": f"≤ {s['threshold']:.4f}",
                   "distance": f"≤ {s['threshold']:.4f} ({s['threshold'] - s['allowance']:.3f} + "
                               f"{s['allowance']:.3f} sampling)"}[s["kind"]]
        rows.append(f"| {s['name']} | {s['meaning']} | {baseline} | {s['value']:.4f} | {change} | {allowed} | "
                    f"{'**yes**' if s['moved'] else 'no'} |")
    return "\n".join(rows)


def _count(record: Mapping, key: str) -> str:
    value = record.get(key)
    return f"{value:,}" if isinstance(value, int) else "n/a"


def run_batch_report(spark: SparkSession, cfg: PipelineConfig, layout: Layout, ds: str) -> StageResult:
    """Render the day's report in memory, then publish figures, report.md and report.html."""
    batch = layout.batch_files(ds)
    with output_lock(batch.reports, "batch_report"):   # the day's reports folder, as scoring and drift lock it
        day = load_day(spark, cfg, batch)
        pngs = render_figures(day, cfg)
        md_text = report_markdown(day, cfg, list(pngs))
        html_text = markdown_to_html(md_text, f"Batch report {day.ds}",
                                     images={BatchReportFiles.figure_link(k): png for k, png in pngs.items()})
        with outputs.publishing(batch.report_figures) as tmp:
            for key, png in pngs.items():
                storage.write_bytes(f"{tmp}/{BatchReportFiles.figure_name(key)}", png)
        storage.write_text(batch.report_md, md_text)
        storage.write_text(batch.report_html, html_text)
    log.info("batch report for %s written: %s and %s", day.ds, batch.report_md, batch.report_html)
    return StageResult(False, {"report_md": batch.report_md, "report_html": batch.report_html},
                       counts={"images": day.scored, "figures": len(pngs)},
                       details={"ds": day.ds, "drift": "not checked" if day.drift is None else
                                ("flagged" if day.drift["flagged"] else "none")})
