"""The drift check: its statistics on known inputs, the verdict line, and the calibration of the defaults on
scanned MNIST-like digits (not flagged) and non-digit pictures (flagged), as daily scoring leaves a day."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from drift_batches import mnist_like_batch, non_digit_batch, stand_in_predictions, write_curated_train, write_day
from drift_batches import training_layout as curated_training_layout

from pipeline import storage
from pipeline.batch import drift
from pipeline.batch.drift import ImageStatistics, Statistic
from pipeline.config import REPO_ROOT, DriftConfig, load_config
from pipeline.errors import EXIT_NOT_RETRYABLE, GateError, PipelineError
from pipeline.layout import Layout

DAY = "2026-11-24"
BATCH_IMAGES = 300


@pytest.fixture(scope="module")
def training_layout(spark, tmp_path_factory):
    """A layout whose curated train split holds the first 3,000 MNIST training images."""
    return curated_training_layout(spark, tmp_path_factory.mktemp("drift-training"), 3000)


@pytest.fixture(scope="module")
def scanned_digits():
    return mnist_like_batch(BATCH_IMAGES, seed=11, offset=1000)


@pytest.fixture(scope="module")
def non_digits():
    return non_digit_batch(BATCH_IMAGES, seed=12)


def day_layout(training_layout: Layout, tmp_path) -> Layout:
    return dataclasses.replace(training_layout, landing_root=str(tmp_path / "landing"),
                               batches_root=str(tmp_path / "batches"))


# --- the statistics on known inputs -------------------------------------------------------------------------------

def test_image_statistics_of_two_known_images(spark):
    images = spark.createDataFrame([([0.0, 0.5, 1.0, 0.0],), ([0.0, 0.0, 1.0, 1.0],)], "image array<float>")
    stats = drift.image_statistics(images, ink_threshold=0.5)
    assert stats.images == 2
    assert stats.pixel_mean == pytest.approx(0.4375)
    assert stats.pixel_std == pytest.approx(math.sqrt(3.25 / 8 - 0.4375 ** 2))   # 0.46351...
    assert stats.ink_share == pytest.approx(0.5)                                 # 0.5, 1, 1, 1 of 8 pixels
    assert stats.mean_image == pytest.approx([0.0, 0.25, 1.0, 0.5])
    assert stats.pixel_variance == pytest.approx((0 + 0.125 + 0 + 0.5) / 4)     # per position, n - 1


def test_no_images_is_one_line(spark):
    with pytest.raises(PipelineError, match="^no images to measure$"):
        drift.image_statistics(spark.createDataFrame([], "image array<float>"), 0.5)


def test_distances_and_sampling_allowances_on_known_values():
    assert drift.total_variation({0: 0.5, 1: 0.5}, {0: 1.0}) == pytest.approx(0.5)
    assert drift.total_variation({0: 0.2, 1: 0.8}, {0: 0.2, 1: 0.8}) == 0.0
    assert drift.rms_distance([0, 0, 0, 0], [1, 1, 0, 0]) == pytest.approx(math.sqrt(0.5))
    uniform = {k: 0.1 for k in range(10)}
    assert drift.sampling_allowance_class_distance(uniform, 100) == pytest.approx(0.119683, abs=1e-6)
    assert drift.sampling_allowance_mean_image(0.04, 100) == pytest.approx(0.02)


BASELINE = {"pixel_mean": 0.13, "pixel_std": 0.31, "ink_share": 0.13, "pixel_variance": 0.04,
            "mean_image": [0.1, 0.2, 0.3, 0.4], "class_shares": {str(k): 0.1 for k in range(10)}}


def test_compare_gives_every_statistic_its_baseline_value_and_threshold():
    batch = ImageStatistics(images=100, pixel_mean=0.20, pixel_std=0.30, ink_share=0.14, pixel_variance=0.05,
                            mean_image=[0.1, 0.2, 0.3, 0.6])
    predicted = {k: 10 for k in range(10)}
    stats = {s.name: s for s in drift.compare(BASELINE, batch, predicted, unsure=45, cfg=DriftConfig())}
    assert list(stats) == ["pixel_mean", "pixel_std", "ink_share", "mean_image_distance", "class_distance",
                           "low_confidence_share"]
    assert (stats["pixel_mean"].change, stats["pixel_mean"].moved) == (pytest.approx(0.07), True)   # > 0.05
    assert (stats["pixel_std"].change, stats["pixel_std"].moved) == (pytest.approx(-0.01), False)
    assert stats["ink_share"].moved is False
    assert stats["mean_image_distance"].value == pytest.approx(0.1)                 # sqrt(0.2^2 / 4)
    assert stats["mean_image_distance"].allowance == pytest.approx(0.02)            # sqrt(0.04 / 100)
    assert stats["mean_image_distance"].threshold == pytest.approx(0.07 + 0.02)
    assert stats["mean_image_distance"].moved is True
    assert (stats["class_distance"].value, stats["class_distance"].moved) == (0.0, False)
    assert stats["low_confidence_share"].baseline is None
    assert (stats["low_confidence_share"].value, stats["low_confidence_share"].moved) == (0.45, True)  # > 0.40


def test_verdict_names_the_statistic_that_moved_most_then_the_others():
    statistics = [Statistic("pixel_mean", 0.13, 0.20, 0.05), Statistic("ink_share", 0.13, 0.33, 0.06),
                  Statistic("pixel_std", 0.31, 0.30, 0.08),
                  Statistic("low_confidence_share", None, 0.5, 0.35, kind="ceiling")]
    assert drift.verdict(DAY, statistics) == (
        "drift on 2026-11-24: ink_share moved by +0.200 (0.130 in training, 0.330 in the batch; allowed ±0.060); "
        "also moved: low_confidence_share, pixel_mean")
    assert drift.verdict(DAY, statistics[2:3]) is None
    assert statistics[3].describe() == "low_confidence_share is 0.500, above its ceiling 0.350"
    assert Statistic("class_distance", 0.0, 0.469, 0.149, 0.069, "distance").describe() == (
        "class_distance is 0.469, more than the 0.149 allowed (0.080 + 0.069 for sampling)")


# --- a day as daily scoring leaves it -----------------------------------------------------------------------------

def test_baseline_is_measured_once_from_the_training_split(spark, training_layout, make_config):
    train = training_layout.prepared("train")
    record = drift.baseline_record(spark, make_config(), train, "curated-for-tests")
    assert (record["split"], record["images"], record["ink_threshold"]) == ("train", 3000, 0.5)
    assert record["pixel_mean"] == pytest.approx(0.1305, abs=2e-3)   # MNIST training images: 0.1307 over all 60,000
    assert sum(record["class_shares"].values()) == pytest.approx(1.0)
    assert storage.read_json(training_layout.drift_baseline) == record
    other = drift.baseline_record(spark, make_config("drift.ink_threshold=0.3"), train, "curated-for-tests")
    assert other["ink_threshold"] == 0.3 and other["ink_share"] > record["ink_share"]


def test_scanned_digits_are_not_flagged(spark, training_layout, scanned_digits, make_config, tmp_path):
    """A model that reads the scanned digits right: every statistic must stay within the default thresholds."""
    layout = day_layout(training_layout, tmp_path)
    images, labels = scanned_digits
    write_day(spark, layout.batch_files(DAY), images, stand_in_predictions(labels, 0.97))
    result = drift.run_drift_check(spark, make_config(), layout, ds=DAY)
    record = storage.read_json(layout.batch_files(DAY).drift)
    assert (record["flagged"], record["verdict"], result.details["moved"]) == (False, "no drift on 2026-11-24", [])
    assert [s["moved"] for s in record["statistics"]] == [False] * 6
    assert (record["model_version"], record["images"]) == ("3", BATCH_IMAGES)


def test_non_digits_are_flagged_by_their_pixels_alone(spark, training_layout, non_digits, make_config, tmp_path):
    """Even a model fooled into confident, digit-like predictions cannot hide noise, blobs and blank pages."""
    layout = day_layout(training_layout, tmp_path)
    classes = np.arange(BATCH_IMAGES) % 10
    write_day(spark, layout.batch_files(DAY), non_digits, stand_in_predictions(classes, 0.97))
    with pytest.raises(GateError, match=r"^drift on 2026-11-24: ink_share moved by \+0\.\d{3} \(0\.13\d in "
                                        r"training, 0\.\d{3} in the batch; allowed ±0\.060\); also moved: "
                                        r"pixel_mean, mean_image_distance$") as failure:
        drift.run_drift_check(spark, make_config(), layout, ds=DAY)
    record = storage.read_json(layout.batch_files(DAY).drift)
    assert record["flagged"] and record["verdict"] == str(failure.value)
    assert {s["name"]: s["moved"] for s in record["statistics"]} == {
        "pixel_mean": True, "pixel_std": False, "ink_share": True, "mean_image_distance": True,
        "class_distance": False, "low_confidence_share": False}
    assert failure.value.result.details["flagged"] is True


def test_on_drift_warn_writes_the_verdict_and_does_not_fail(spark, training_layout, non_digits, make_config,
                                                            tmp_path, caplog):
    layout = day_layout(training_layout, tmp_path)
    write_day(spark, layout.batch_files(DAY), non_digits, stand_in_predictions(np.arange(BATCH_IMAGES) % 10, 0.97))
    result = drift.run_drift_check(spark, make_config("drift.on_drift=warn"), layout, ds=DAY)
    assert result.details["flagged"] is True
    assert storage.read_json(layout.batch_files(DAY).drift)["on_drift"] == "warn"
    assert any(r.getMessage().startswith("drift on 2026-11-24: ink_share moved by +") for r in caplog.records)


def test_the_day_is_judged_on_the_facts_its_scoring_recorded_or_on_its_predictions(spark, training_layout,
                                                                                   scanned_digits, make_config,
                                                                                   tmp_path):
    """The scoring counts the predicted classes and the unsure predictions once (scoring.json); a day scored before
    it did, or a check asking about another drift.low_confidence, counts them from the predictions instead."""
    layout = day_layout(training_layout, tmp_path)
    batch = layout.batch_files(DAY)
    images, labels = scanned_digits
    write_day(spark, batch, images, stand_in_predictions(labels, 0.97))
    scoring = storage.read_json(batch.scoring)
    assert scoring["low_confidence"] == {"below": 0.8, "count": 0}
    assert scoring["predicted_counts"] == {str(k): int((labels == k).sum()) for k in range(10)}
    drift.run_drift_check(spark, make_config(), layout, ds=DAY)
    recorded = storage.read_json(batch.drift)

    older = {key: value for key, value in scoring.items() if key not in ("predicted_counts", "low_confidence")}
    storage.write_json(batch.scoring, older)
    drift.run_drift_check(spark, make_config(), layout, ds=DAY)
    assert storage.read_json(batch.drift) == recorded

    with pytest.raises(GateError, match=r"low_confidence_share"):   # every prediction (0.97) is below 0.99
        drift.run_drift_check(spark, make_config("drift.low_confidence=0.99"), layout, ds=DAY)
    unsure = {s["name"]: s["value"] for s in storage.read_json(batch.drift)["statistics"]}["low_confidence_share"]
    assert unsure == 1.0


def test_a_day_not_scored_yet_is_one_line(spark, training_layout, make_config, tmp_path):
    layout = day_layout(training_layout, tmp_path)
    scoring = layout.batch_files(DAY).scoring
    with pytest.raises(PipelineError, match=f"^{scoring} not found: run jobs/score_batch.py first$"):
        drift.run_drift_check(spark, make_config(), layout, ds=DAY)


def test_images_and_predictions_that_disagree_are_one_line(spark, training_layout, make_config, tmp_path):
    """A day written before publication tokens, whose images folder was replaced by hand after its scoring."""
    layout = day_layout(training_layout, tmp_path)
    batch = layout.batch_files(DAY)
    images, labels = mnist_like_batch(12, seed=1)
    write_day(spark, batch, images, stand_in_predictions(labels, 0.97))
    storage.remove(batch.images)
    write_day(spark, dataclasses.replace(batch, root=str(tmp_path / "other")), images[:10],
              stand_in_predictions(labels[:10], 0.97))
    storage.filesystem(batch.images)[0].move(f"{tmp_path}/other/images/ds={DAY}", batch.images)
    with pytest.raises(PipelineError, match=r"^the images and predictions of 2026-11-24 disagree \(10 images, 12 "
                                            r"predictions\): rerun jobs/score_batch.py --ds 2026-11-24$"):
        drift.run_drift_check(spark, make_config(), layout, ds=DAY)
    assert not storage.exists(batch.drift)


@pytest.mark.slow
def test_real_model_flags_non_digits_and_passes_scanned_digits(spark, training_layout, scanned_digits, non_digits,
                                                               small_mnist_model, make_config, tmp_path):
    """The fixture model (about 90% accurate) scores both batches: the digits pass, the non-digits do not, and
    the letter-like strokes alone are caught by the predicted classes and the share of unsure predictions."""
    from drift_batches import NON_DIGIT_KINDS

    from pipeline.scoring import score_images
    batches = {"digits": scanned_digits[0], "non_digits": non_digits,
               "strokes": non_digit_batch(200, seed=13, kinds=("strokes",))}
    flagged = {}
    for n, (name, images) in enumerate(batches.items()):
        frame = spark.createDataFrame([(f"{name}-{i:05d}", image.tolist()) for i, image in enumerate(images)],
                                      "record_id string, image array<float>")
        scored = score_images(frame, small_mnist_model["trained"], 256).orderBy("record_id").collect()
        probabilities = np.array([row["probabilities"] for row in scored], dtype=np.float32)
        layout, ds = day_layout(training_layout, tmp_path / name), f"2026-11-{10 + n:02d}"
        write_day(spark, layout.batch_files(ds), images, probabilities)
        try:
            drift.run_drift_check(spark, make_config(), layout, ds=ds)
        except GateError:
            pass
        record = storage.read_json(layout.batch_files(ds).drift)
        flagged[name] = {s["name"] for s in record["statistics"] if s["moved"]}
        print(name, json.dumps({s["name"]: round(s["value"], 4) for s in record["statistics"]}))
    assert flagged["digits"] == set()
    assert {"ink_share", "pixel_mean", "mean_image_distance", "class_distance"} <= flagged["non_digits"]
    assert {"class_distance", "low_confidence_share"} <= flagged["strokes"]
    assert NON_DIGIT_KINDS == ("noise", "blob", "blank_page", "strokes")


@pytest.mark.slow
def test_the_jobs_fail_in_one_line_then_the_report_still_runs(spark, non_digits, tmp_path):
    """check_drift then batch_report as a scheduler runs them, each its own process."""
    settings = [f"paths.data={tmp_path / 'data'}", f"paths.runs={tmp_path / 'runs'}",
                f"paths.batches={tmp_path / 'batches'}", "spark.master=local[1]"]
    layout = Layout.from_config(load_config(REPO_ROOT / "conf" / "local.yaml", None, settings))  # as the jobs do
    write_curated_train(spark, layout, 500)
    write_day(spark, layout.batch_files(DAY), non_digits, stand_in_predictions(np.arange(BATCH_IMAGES) % 10, 0.97))
    overrides = [arg for setting in settings for arg in ("--set", setting)]
    run = {"capture_output": True, "text": True, "timeout": 300, "cwd": REPO_ROOT,
           "env": {**os.environ, "PYTHONPATH": str(REPO_ROOT)}}
    drift_job = subprocess.run([sys.executable, "jobs/check_drift.py", "--ds", DAY, *overrides], **run)
    errors = [line for line in drift_job.stderr.splitlines() if line.startswith("ERROR")]
    assert drift_job.returncode == EXIT_NOT_RETRYABLE  # a verdict: no retry
    assert len(errors) == 1 and errors[0].startswith("ERROR [check_drift]: drift on 2026-11-24: ink_share moved by")
    report_job = subprocess.run([sys.executable, "jobs/batch_report.py", "--ds", DAY, *overrides], **run)
    assert report_job.returncode == 0, report_job.stderr
    assert "**DRIFT** (drift.on_drift = fail): drift on 2026-11-24" in storage.read_text(
        layout.batch_files(DAY).report_md)
