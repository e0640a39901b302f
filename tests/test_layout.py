"""Every path and file name comes from the Layout: pinned here, so a refactor cannot move an output unnoticed."""
from __future__ import annotations

import dataclasses

import pytest

from pipeline.errors import PipelineError
from pipeline.layout import CheckpointFiles, Layout, model_file_in


def test_every_output_keeps_its_path(make_config):
    layout = dataclasses.replace(Layout.from_config(make_config(), "run-1"), raw_root="/d/ingest-a",
                                 curated_root="/d/ingest-a/curated-b", run_root="/r/run-1")
    assert {
        "raw": layout.raw, "quarantine": layout.quarantine, "validation_report": layout.validation_report,
        "raw_manifest": layout.raw_manifest, "curated": layout.curated("test"),
        "curated_manifest": layout.curated_manifest, "run_id": layout.run_id, "model_file": layout.model_file("m"),
        "history": layout.history("m"), "checkpoint": layout.checkpoint_dir("m"), "curves": layout.curves("m"),
        "prediction_dir": layout.prediction_dir("test"), "report_md": layout.report_md,
        "report_html": layout.report_html, "report_figure": layout.report_figure("m_curves"),
        "report_figure_link": Layout.report_figure_link("m_curves"), "run_manifest": layout.run_manifest,
    } == {
        "raw": "/d/ingest-a/raw", "quarantine": "/d/ingest-a/quarantine",
        "validation_report": "/d/ingest-a/validation_report.json", "raw_manifest": "/d/ingest-a/manifest.json",
        "curated": "/d/ingest-a/curated-b/test", "curated_manifest": "/d/ingest-a/curated-b/manifest.json",
        "run_id": "run-1", "model_file": "/r/run-1/train/m/model.keras", "history": "/r/run-1/train/m/history.json",
        "checkpoint": "/r/run-1/train/m/checkpoint", "curves": "/r/run-1/train/m/curves.png",
        "prediction_dir": "/r/run-1/predict/test", "report_md": "/r/run-1/report.md",
        "report_html": "/r/run-1/report.html", "report_figure": "/r/run-1/figures/m_curves.png",
        "report_figure_link": "figures/m_curves.png", "run_manifest": "/r/run-1/manifest.json",
    }
    checkpoint = CheckpointFiles(layout.checkpoint_dir("m"))
    assert (checkpoint.weights, checkpoint.state) == ("/r/run-1/train/m/checkpoint/weights",
                                                      "/r/run-1/train/m/checkpoint/state.json")
    assert model_file_in("/elsewhere/m") == "/elsewhere/m/model.keras"


def test_the_published_folders_keep_their_file_names(make_config):
    layout = dataclasses.replace(Layout.from_config(make_config()), curated_root="/c", run_root="/r/run-1")
    eda = layout.eda_files
    assert (eda.summary, eda.manifest, eda.table("drift"), eda.figure("sample_grid")) == (
        "/c/eda/summary.json", "/c/eda/manifest.json", "/c/eda/drift.csv", "/c/eda/sample_grid.png")
    ev = layout.evaluation_files
    assert (ev.metrics("m"), ev.confusion_matrix_csv("m"), ev.confusion_matrix_png("m"), ev.misclassified_png("m"),
            ev.comparison, ev.comparison_table, ev.best_model, ev.manifest) == (
        "/r/run-1/evaluate/m/metrics.json", "/r/run-1/evaluate/m/confusion_matrix.csv",
        "/r/run-1/evaluate/m/confusion_matrix.png", "/r/run-1/evaluate/m/misclassified.png",
        "/r/run-1/evaluate/comparison.json", "/r/run-1/evaluate/comparison.md", "/r/run-1/evaluate/best_model.json",
        "/r/run-1/evaluate/manifest.json")
    out = layout.prediction_files("digits")
    assert (out.predictions, out.metrics, out.confusion_matrix, out.manifest, out.unreadable_list,
            out.failed_unreadable_list) == (
        "/r/run-1/predict/digits/predictions.parquet", "/r/run-1/predict/digits/metrics.json",
        "/r/run-1/predict/digits/confusion_matrix.csv", "/r/run-1/predict/digits/manifest.json",
        "/r/run-1/predict/digits/unreadable.csv", "/r/run-1/predict/digits.unreadable.csv")


@pytest.mark.parametrize("run_id", ["../../elsewhere", "a/b", "/tmp/x", "..", "a..b", ".hidden", "x" * 129])
def test_a_run_id_that_is_not_a_plain_folder_name_is_one_line(make_config, run_id):
    with pytest.raises(PipelineError, match=r"^--run-id .*: expected a plain folder name"):
        Layout.from_config(make_config(), run_id)


def test_a_run_id_from_the_command_line_is_checked_before_anything_is_written(tmp_path, capsys):
    from jobs.train import _main
    from pipeline.errors import EXIT_NOT_RETRYABLE
    code = _main(["--set", f"paths.runs={tmp_path / 'runs'}", "--set", f"paths.data={tmp_path / 'data'}",
                  "--run-id", "../../../elsewhere"])
    assert code == EXIT_NOT_RETRYABLE
    assert capsys.readouterr().err.strip().startswith("ERROR [train]: --run-id ../../../elsewhere: expected a plain")
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "runs").exists()
