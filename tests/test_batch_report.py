"""The batch report of one day: both pages written, figures embedded, model version and drift verdict shown, the
least confident images drawn, and nothing half-published when rendering fails."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from drift_batches import non_digit_batch, stand_in_predictions, write_day
from drift_batches import training_layout as curated_training_layout

from pipeline import storage
from pipeline.batch import batch_report, report_figures
from pipeline.batch.drift import run_drift_check
from pipeline.errors import GateError, PipelineError
from pipeline.layout import Layout

DAY = "2026-11-25"
IMAGES = 40


@pytest.fixture(scope="module")
def training_layout(spark, tmp_path_factory):
    return curated_training_layout(spark, tmp_path_factory.mktemp("report-training"), 500)


@pytest.fixture
def day(spark, training_layout, tmp_path):
    """A scored day of 40 non-digit pictures; confidence rises with the image index, so the least confident are
    the first ones."""
    layout = dataclasses.replace(training_layout, batches_root=str(tmp_path / "batches"))
    probabilities = stand_in_predictions(np.arange(IMAGES) % 10, 0.5)
    probabilities[np.arange(IMAGES), np.arange(IMAGES) % 10] = np.linspace(0.3, 0.99, IMAGES)
    write_day(spark, layout.batch_files(DAY), non_digit_batch(IMAGES, seed=5), probabilities, model_version="7",
              quarantined=2)
    return layout


def report_files(layout: Layout) -> set[str]:
    """Every file under the day's reports folder, relative to it."""
    root = layout.batch_files(DAY).reports
    return {str(p.relative_to(root)) for p in Path(root).rglob("*") if p.is_file()}


def test_report_after_a_drift_failure_shows_version_counts_verdict_and_embeds_every_figure(spark, day, make_config):
    cfg = make_config("batch.low_confidence_examples=6")
    with pytest.raises(GateError):
        run_drift_check(spark, cfg, day, ds=DAY)
    result = batch_report.run_batch_report(spark, cfg, day, ds=DAY)
    batch = day.batch_files(DAY)
    md, html = storage.read_text(batch.report_md), storage.read_text(batch.report_html)
    assert "Model `mnist` version `7` scored 40 images of 2026-11-25; 2 quarantined by the checks." in md
    verdict = storage.read_json(batch.drift)["verdict"]
    assert f"Drift verdict: **DRIFT** (drift.on_drift = fail): {verdict}" in md
    assert "| ink_share | share of pixels at or above drift.ink_threshold |" in md
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", md)
    assert links == ["figures/class_distribution.png", "figures/confidence.png", "figures/drift.png",
                     "figures/least_confident.png"]
    assert report_files(day) == {"scoring.json", "drift.json", "report.md", "report.html",
                                 *links}
    assert html.count('src="data:image/png;base64,') == 4 and 'src="figures/' not in html
    assert "version <code>7</code>" in html and "<strong>DRIFT</strong>" in html
    assert (result.counts, result.details["drift"]) == ({"images": 40, "figures": 4}, "flagged")


def test_the_least_confident_images_come_first_with_their_prediction(spark, day, make_config):
    cfg = make_config("batch.low_confidence_examples=3")
    outputs = batch_report.load_day(spark, cfg, day.batch_files(DAY))
    assert [(e["source_file"], e["prediction"]) for e in outputs.least_confident] == [
        ("scan-0000.png", 0), ("scan-0001.png", 1), ("scan-0002.png", 2)]
    fig = report_figures.lowest_confidence_grid(outputs.least_confident)
    assert [ax.get_title() for ax in fig.axes[:3]] == ["pred 0 (0.30)", "pred 1 (0.32)", "pred 2 (0.34)"]
    assert sum(outputs.confidence_counts) == 40 and outputs.low_confidence == 29   # 0.30 + k * 0.0177 < 0.8


def test_a_day_without_a_drift_check_says_so(spark, day, make_config):
    batch_report.run_batch_report(spark, make_config(), day, ds=DAY)
    md = storage.read_text(day.batch_files(DAY).report_md)
    assert ("Drift verdict: **not checked**: no drift check for this day yet (run `jobs/check_drift.py --ds "
            "2026-11-25`)") in md
    assert "figures/drift.png" not in md


def test_a_failed_rendering_publishes_nothing_and_keeps_the_previous_report(spark, day, make_config, monkeypatch):
    batch = day.batch_files(DAY)

    def broken(*args, **kwargs):
        raise PipelineError("figure failed")

    monkeypatch.setattr(report_figures, "lowest_confidence_grid", broken)
    with pytest.raises(PipelineError, match="^figure failed$"):
        batch_report.run_batch_report(spark, make_config(), day, ds=DAY)
    assert report_files(day) == {"scoring.json"}
    monkeypatch.undo()
    batch_report.run_batch_report(spark, make_config(), day, ds=DAY)
    before = {name: storage.read_bytes(f"{batch.reports}/{name}") for name in report_files(day)}
    monkeypatch.setattr(report_figures, "lowest_confidence_grid", broken)
    with pytest.raises(PipelineError, match="^figure failed$"):
        batch_report.run_batch_report(spark, make_config(), day, ds=DAY)
    assert {name: storage.read_bytes(f"{batch.reports}/{name}") for name in report_files(day)} == before


def test_a_drift_check_older_than_the_scoring_is_called_stale(spark, day, make_config):
    batch = day.batch_files(DAY)
    with pytest.raises(GateError):
        run_drift_check(spark, make_config(), day, ds=DAY)
    # left by a check of an earlier scoring of the day, by version 6
    storage.write_json(batch.drift, {**storage.read_json(batch.drift), "model_version": "6"})
    batch_report.run_batch_report(spark, make_config(), day, ds=DAY)
    md = storage.read_text(batch.report_md)
    assert ("Drift verdict: **stale**: the drift check saw model version 6 and 40 images, not this scoring; rerun "
            "`jobs/check_drift.py --ds 2026-11-25`. It said: drift on 2026-11-25: ") in md
