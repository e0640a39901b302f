"""Write report.md and a self-contained report.html for a run, from its outputs only."""
from __future__ import annotations

import logging

from pyspark.sql import SparkSession

from pipeline import storage
from pipeline.config import PipelineConfig
from pipeline.layout import Layout
from pipeline.locks import output_lock
from pipeline.rendering import markdown_to_html
from pipeline.report import sections
from pipeline.report.outputs import RunOutputs, load_run_outputs
from pipeline.result import StageResult

log = logging.getLogger(__name__)


def build_report_markdown(cfg: PipelineConfig, layout: Layout) -> tuple[str, dict[str, str]]:
    """The report's Markdown and the figures it references (key -> source path)."""
    out = load_run_outputs(cfg, layout)
    return report_markdown(out, cfg, layout), out.figures


def report_markdown(out: RunOutputs, cfg: PipelineConfig, layout: Layout) -> str:
    """The report's Markdown: every section rendered from the loaded run outputs."""
    run_id = layout.run_id
    header = (f"# MNIST classification on Spark: run report\n\nRun `{run_id}`, profile `{cfg.profile}`, "
              f"started {out.run_manifest.get('started', 'n/a')}. Every number below is read from this run's "
              "outputs.")
    body = [header, sections.data_section(out), sections.eda_section(out), sections.models_section(out, cfg),
            sections.prediction_section(out, cfg), sections.tracking_section(out, cfg),
            sections.structure_section(layout), sections.libraries_section(out), sections.limitations_section(out),
            sections.conclusions_section(out, cfg), sections.references_section()]
    return "\n\n".join(body) + "\n"


def run_report(spark: SparkSession, cfg: PipelineConfig, layout: Layout) -> StageResult:
    """Copy the figures next to the report, write report.md and report.html (figures embedded)."""
    # report.md, report.html and figures/ share one lock, <run root>/report.lock
    with output_lock(layout.report, "report"):
        md_text, figures = build_report_markdown(cfg, layout)
        for key, source in figures.items():
            storage.write_bytes(layout.report_figure(key), storage.read_bytes(source))
        # Both rendered before either is written: a failed rendering leaves the previous pair, not a mixed one.
        html_text = markdown_to_html(md_text, "MNIST on Spark: run report", layout.run_root)
        storage.write_text(layout.report_md, md_text)
        storage.write_text(layout.report_html, html_text)
    log.info("report written: %s and %s (%d figures)", layout.report_md, layout.report_html, len(figures))
    details = {}
    if cfg.tracking.enabled:
        from pipeline.tracking.runs import log_report
        details["mlflow_run_id"] = log_report(cfg, layout)
    return StageResult(False, {"report_md": layout.report_md, "report_html": layout.report_html},
                       counts={"figures": len(figures)}, details=details)
