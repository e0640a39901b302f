"""Scheduled batches: the day's date checked, simulated arrivals that are deterministic and decode to their digits,
and daily scoring of small days end to end: published partitions, reruns that replace only their own day, and
corrupt days that publish nothing."""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import importlib
import os
import re
from pathlib import Path

import numpy as np
import pytest
from pyspark.testing import assertDataFrameEqual, assertSchemaEqual

from pipeline import outputs, scoring, storage
from pipeline.batch.arrivals import simulate_day
from pipeline.batch.model import model_file_version, scoring_model
from pipeline.batch.score import run_batch_scoring
from pipeline.config import REPO_ROOT
from pipeline.errors import EXIT_NOT_RETRYABLE, PipelineError, RetryableError
from pipeline.failures import job_failure
from pipeline.formats.idx import read_array
from pipeline.formats.images import decode_image_file
from pipeline.layout import BatchFiles, Layout
from pipeline.run_ids import checked_ds
from pipeline.schema import BATCH_IMAGES_SCHEMA, BATCH_PREDICTIONS_SCHEMA, BATCH_QUARANTINE_SCHEMA, IMAGE_PIXELS
from pipeline.stages import DAILY_STAGES

DAY, OTHER_DAY = "2026-11-24", "2026-11-23"
COUNT = 30


def test_a_day_is_a_real_date_written_yyyy_mm_dd():
    assert checked_ds("2024-02-29") == "2024-02-29"
    for bad in ("2026-11-24/..", "26-11-24", "2026-1-24", " 2026-11-24", "20261124"):
        with pytest.raises(PipelineError, match=r"^--ds .*: expected a date written YYYY-MM-DD, e\.g\. 2026-11-24$"):
            checked_ds(bad)
    with pytest.raises(PipelineError, match=r"^--ds 2026-02-30: not a real date \(day is out of range for month\)$"):
        BatchFiles("landing", "batches", "2026-02-30")


def test_the_job_refuses_a_bad_date_in_one_line_before_starting_spark(capsys):
    job = importlib.import_module("jobs.score_batch")
    assert job._main(["--ds", "2026-13-01"]) == EXIT_NOT_RETRYABLE
    assert capsys.readouterr().err.splitlines() == [
        "ERROR [score_batch]: --ds 2026-13-01: not a real date (month must be in 1..12)"]


@pytest.mark.parametrize("stage", DAILY_STAGES, ids=[stage.name for stage in DAILY_STAGES])
def test_every_daily_stage_has_a_job_taking_ds_and_its_options(stage):
    job = importlib.import_module(f"jobs.{stage.name}")
    flags = {flag for action in job.args_parser()._actions for flag in action.option_strings}
    assert flags == {"-h", "--help", "--conf", "--profile", "--set", "--ds"} | {o.cli_flag for o in stage.options}
    with pytest.raises(PipelineError, match=f"stage '{stage.name}' runs for one day: pass --ds YYYY-MM-DD"):
        stage.run(None, None, None)


def _day_files(cfg, ds: str) -> BatchFiles:
    return Layout.from_config(cfg).batch_files(ds)


def _rounded(value):
    """`value` (JSON) with its floats to 5 decimals."""
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return round(value, 5) if isinstance(value, float) else value


def _folder_bytes(folder: str) -> dict[str, bytes]:
    root = Path(folder)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_simulated_days_are_deterministic_scans_of_their_labelled_digits(make_config, tmp_path):
    cfg = make_config(f"paths.landing={tmp_path / 'landing'}")
    files = _day_files(cfg, DAY)
    landed = simulate_day(cfg, files, COUNT, labels=True)
    first = _folder_bytes(files.landing)
    assert simulate_day(cfg, files, COUNT, labels=True) == landed
    assert _folder_bytes(files.landing) == first                      # same day: the same bytes
    assert os.listdir(tmp_path / "landing") == [f"ds={DAY}"]          # replaced in one move, nothing left beside
    other = simulate_day(cfg, _day_files(cfg, OTHER_DAY), COUNT)
    assert [name for name, _ in other] != [name for name, _ in landed] or other != landed
    with open(files.labels, newline="") as labels_file:
        assert [(r["file"], int(r["label"])) for r in csv.DictReader(labels_file)] == landed
    assert {name.rsplit(".", 1)[1] for name, _ in landed} == {"png", "jpg"}
    # Decoded as predict decodes pictures, each scan is nearest to the MNIST test mean image of its own label.
    means = _mnist_test_class_means()
    decoded = [decode_image_file(f"{files.landing}/{name}", 10**6) for name, _ in landed]
    assert all(error is None and image.shape == (IMAGE_PIXELS,) and image.max() == 1.0 for image, error in decoded)
    nearest = [int(np.argmin(((means - image) ** 2).sum(axis=1))) for image, _ in decoded]
    agreement = np.mean([guess == label for guess, (_, label) in zip(nearest, landed, strict=True)])
    assert agreement >= 0.6, agreement   # nearest class mean: about 0.82 on MNIST itself


def _mnist_test_class_means() -> np.ndarray:
    images = read_array(REPO_ROOT / "data" / "mnist" / "t10k-images-idx3-ubyte.gz").reshape(-1, IMAGE_PIXELS) / 255.0
    labels = read_array(REPO_ROOT / "data" / "mnist" / "t10k-labels-idx1-ubyte.gz")
    return np.stack([images[labels == k].mean(axis=0) for k in range(10)])


def test_non_digit_kinds_land_without_labels(make_config, tmp_path):
    cfg = make_config(f"paths.landing={tmp_path / 'landing'}")
    for kind in ("noise", "blobs", "letters"):
        files = _day_files(cfg, DAY)
        landed = simulate_day(cfg, files, 5, kind=kind)
        assert [name.split("-")[0] for name, _ in landed] == [kind] * 5 and not storage.exists(files.labels)
    with pytest.raises(PipelineError, match="^--labels: only digits have labels, not noise$"):
        simulate_day(cfg, files, 5, kind="noise", labels=True)


def test_a_day_larger_than_the_test_images_is_refused_in_one_line(make_config, tiny_world, tmp_path):
    cfg = make_config(f"paths.landing={tmp_path / 'landing'}", input_dir=str(tiny_world))
    with pytest.raises(PipelineError, match=rf"^--count 1001: {tiny_world}/t10k-images-idx3-ubyte.gz holds 1000 "
                                            "test images, and a day draws each at most once$"):
        simulate_day(cfg, _day_files(cfg, DAY), 1001)
    assert not (tmp_path / "landing").exists()


def test_digits_without_the_mnist_test_file_are_refused_in_one_line(make_config, tmp_path):
    cfg = make_config(f"paths.landing={tmp_path / 'landing'}", input_dir=str(tmp_path / "no-mnist"))
    with pytest.raises(PipelineError, match=rf"^paths.input {tmp_path}/no-mnist: t10k-images-idx3-ubyte.gz not "
                                            r"found \(simulated digits are MNIST's test images\)$"):
        simulate_day(cfg, _day_files(cfg, DAY), 5)
    assert not (tmp_path / "landing").exists()


def test_a_keras_file_is_versioned_by_its_bytes(tmp_path):
    model = tmp_path / "model_1.keras"
    model.write_bytes(b"not really a model")
    found = model_file_version(str(model))
    assert (found.name, found.version) == ("model_1", f"file:{hashlib.sha256(b'not really a model').hexdigest()[:12]}")
    with pytest.raises(PipelineError, match=r"^--model .*/missing\.keras: expected a \.keras file or a "
                                            r"models:/<name>@<alias> URI$"):
        model_file_version(str(tmp_path / "missing.keras"))


def test_a_registry_uri_is_resolved_once_to_a_fixed_version_with_its_training_data(make_config, small_mnist_model):
    """The real registry: no champion yet is one line; models:/ URIs and the champion resolve to a fixed version,
    its checked local model file and the data training recorded on it (which the drift check measures against)."""
    from registry_versions import make_champion, register

    from pipeline.tracking.registry import TRAINING_DATA_TAG
    cfg = make_config()
    with pytest.raises(PipelineError, match=r"^the model registry has no champion yet: promote a model first, "
                                            r"or pass --model <file\.keras>$"):
        scoring_model(cfg, None)
    first = make_champion(cfg, small_mnist_model["trained"], "model_1", 0.9)
    second = register(cfg, small_mnist_model["untrained"], "model_1", 0.1,
                      **{TRAINING_DATA_TAG: "/data/curated/train", "data_fingerprint": "abc123"})
    name = cfg.tracking.registered_model
    champion = scoring_model(cfg, None)
    assert (champion.name, champion.version, champion.asked, champion.training_data) == (
        name, first, f"models:/{name}@champion", None)
    assert Path(champion.model_file).read_bytes() == Path(small_mnist_model["trained"]).read_bytes()
    pinned = scoring_model(cfg, f"models:/{name}/{second}")
    assert (pinned.version, pinned.training_data) == (second, ("/data/curated/train", "abc123"))


@pytest.fixture(scope="module")
def two_scored_days(spark, small_mnist_model, tmp_path_factory):
    """Two days landed (DAY with labels) and scored with the fixture model; returns (cfg, layout)."""
    from pipeline.config import load_config
    root = tmp_path_factory.mktemp("batches")
    cfg = load_config(None, "full", [f"paths.data={root / 'data'}", f"paths.runs={root / 'runs'}",
                                     f"paths.landing={root / 'landing'}", f"paths.batches={root / 'batches'}",
                                     "spark.master=local[2]"])
    layout = Layout.from_config(cfg)
    for ds, labels in ((DAY, True), (OTHER_DAY, False)):
        simulate_day(cfg, layout.batch_files(ds), COUNT, labels=labels)
        run_batch_scoring(spark, cfg, layout, ds, model=small_mnist_model["trained"])
    return cfg, layout


@pytest.mark.slow
def test_a_day_is_checked_scored_and_published_with_the_model_version(spark, small_mnist_model, two_scored_days):
    cfg, layout = two_scored_days
    files = layout.batch_files(DAY)
    version = f"file:{hashlib.sha256(Path(small_mnist_model['trained']).read_bytes()).hexdigest()[:12]}"
    images = spark.read.parquet(files.images)
    predictions = spark.read.parquet(files.predictions)
    assertSchemaEqual(images.schema, BATCH_IMAGES_SCHEMA)
    assertSchemaEqual(predictions.schema, BATCH_PREDICTIONS_SCHEMA)
    assertSchemaEqual(spark.read.parquet(files.quarantine).schema, BATCH_QUARANTINE_SCHEMA)
    with open(files.labels, newline="") as labels_file:
        labels = {r["file"]: int(r["label"]) for r in csv.DictReader(labels_file)}
    rows = predictions.collect()
    assert sorted(r["record_id"] for r in rows) == sorted(labels)
    assert {(r["model_name"], r["model_version"]) for r in rows} == {("trained", version)}
    assert all(r["source_file"] == r["record_id"] and len(r["probabilities"]) == 10 for r in rows)
    accuracy = np.mean([r["prediction"] == labels[r["record_id"]] for r in rows])
    assert accuracy >= 0.7, accuracy
    scoring = storage.read_json(files.scoring)
    assert (scoring["count"], scoring["quarantined"], scoring["model"]["version"]) == (COUNT, 0, version)
    assert sum(scoring["predicted_counts"].values()) == COUNT and scoring["labels_arrived"] is True
    report = storage.read_json(files.validation_report)
    assert (report["status"], report["records"], report["valid"], report["input_kind"]) == ("passed", COUNT, COUNT,
                                                                                           "images")
    # Every day of the table, read through its published day folders: each day once, no temporary or lock file.
    table = spark.read.option("basePath", files.table("predictions")).parquet(files.published("predictions"))
    assert sorted((str(r["ds"]), r["count"]) for r in table.groupBy("ds").count().collect()) == [
        (OTHER_DAY, COUNT), (DAY, COUNT)]


@pytest.mark.slow
def test_rescoring_a_day_on_the_executors_replaces_that_day_only_with_what_the_driver_gave(spark, small_mnist_model,
                                                                                          two_scored_days):
    """The fixture's small days were decoded and scored in the driver (batch.driver_max_images); rescored on the
    executors' Python workers, the day's images, predictions and summary are the same."""
    cfg, layout = two_scored_days
    files, other = layout.batch_files(DAY), layout.batch_files(OTHER_DAY)
    assert small_mnist_model["trained"] in scoring._MODEL_CACHE  # the driver loaded the model: it scored the days
    before = {table: spark.read.parquet(folder).collect() for table, folder in (("predictions", files.predictions),
                                                                                ("images", files.images))}
    summary_before = storage.read_json(files.scoring)
    other_before = {folder: _folder_bytes(folder) for folder in (other.images, other.predictions, other.reports)}
    other_mtimes = sorted((str(p), p.stat().st_mtime_ns) for p in Path(other.predictions).rglob("*"))
    on_executors = dataclasses.replace(cfg, batch=dataclasses.replace(cfg.batch, driver_max_images=0))
    scoring._MODEL_CACHE.clear()
    run_batch_scoring(spark, on_executors, layout, DAY, model=small_mnist_model["trained"])
    assert not scoring._MODEL_CACHE  # the driver never loaded it this time
    after = spark.read.parquet(files.predictions)
    assertDataFrameEqual(after, before["predictions"])
    assertDataFrameEqual(spark.read.parquet(files.images), before["images"])
    summary = storage.read_json(files.scoring)
    assert summary.pop("publication") != summary_before.pop("publication")
    assert _rounded(summary) == _rounded(summary_before)  # confidences as equal as a model call's floats
    assert after.select("record_id").distinct().count() == after.count() == COUNT
    assert {folder: _folder_bytes(folder) for folder in other_before} == other_before
    assert sorted((str(p), p.stat().st_mtime_ns) for p in Path(other.predictions).rglob("*")) == other_mtimes
    assert sorted(os.listdir(files.table("predictions"))) == [f"ds={OTHER_DAY}", f"ds={DAY}"]  # locks released


@pytest.mark.slow
def test_a_corrupt_day_fails_in_one_line_and_publishes_nothing(spark, small_mnist_model, two_scored_days, tmp_path):
    cfg, layout = two_scored_days
    files = layout.batch_files(DAY)
    published = {folder: _folder_bytes(folder) for folder in (files.images, files.predictions, files.quarantine,
                                                             files.reports)}
    landing_copy = tmp_path / "landing-copy"
    os.rename(files.landing, landing_copy)
    try:
        os.makedirs(files.landing)
        for name in sorted(os.listdir(landing_copy))[:5]:
            (Path(files.landing) / name).write_bytes((landing_copy / name).read_bytes())
        (Path(files.landing) / "scan-0001.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
        with pytest.raises(PipelineError) as failed:
            run_batch_scoring(spark, cfg, layout, DAY, model=small_mnist_model["trained"])
        message = str(failed.value)
        assert "\n" not in message
        assert message.startswith(f"{files.landing}: 1 of 4 records failed record checks (25.0000% > "
                                  f"data.max_quarantine_fraction 0.0): ")
        assert message.endswith("; the first: scan-0001.png: UnidentifiedImageError: not a PNG, JPEG, BMP, GIF, "
                                "TIFF, WEBP image")
        # An earlier successful scoring of the day stays as it was, whole; nothing half-written beside it.
        assert {folder: _folder_bytes(folder) for folder in published} == published
        for table in ("images", "quarantine", "predictions"):
            assert sorted(os.listdir(files.table(table))) == [f"ds={OTHER_DAY}", f"ds={DAY}"]
    finally:
        storage.remove(files.landing)
        os.rename(landing_copy, files.landing)


@pytest.mark.slow
def test_a_missing_empty_or_corrupt_raw_day_is_named(spark, small_mnist_model, two_scored_days):
    cfg, layout = two_scored_days
    model = small_mnist_model["trained"]
    missing = layout.batch_files("2026-01-01")
    with pytest.raises(PipelineError, match=rf"^{missing.landing}: no landing folder for 2026-01-01 \(nothing "
                                            rf"arrived that day, or the landing path paths\.landing is wrong\)$"):
        run_batch_scoring(spark, cfg, layout, "2026-01-01", model=model)
    os.makedirs(missing.landing)
    Path(missing.labels).write_text("file,label\n")
    with pytest.raises(PipelineError, match=rf"^{missing.landing}: the landing folder is empty"):
        run_batch_scoring(spark, cfg, layout, "2026-01-01", model=model)
    header = ",".join(["label", *(f"pixel{i}" for i in range(IMAGE_PIXELS))])
    Path(missing.landing, "mnist_test.csv").write_text(f"{header}\n7," + ",".join(["0"] * 700) + "\n")
    with pytest.raises(PipelineError, match=rf"^{missing.landing}: mnist_test\.csv: line 2 has 701 fields, "
                                            rf"expected 785$"):
        run_batch_scoring(spark, cfg, layout, "2026-01-01", model=model)
    assert not any(storage.exists(folder) for folder in (missing.images, missing.predictions, missing.reports))


@pytest.mark.slow
def test_a_model_failing_on_the_workers_is_one_line_and_publishes_nothing(spark, two_scored_days, tmp_path,
                                                                            monkeypatch):
    """A model file that changed after the driver's check: the workers refuse it, the day keeps what it had."""
    cfg, layout = two_scored_days
    files = layout.batch_files(DAY)
    published = _folder_bytes(files.predictions)
    bogus = tmp_path / "swapped.keras"
    bogus.write_bytes(b"not a zip")
    monkeypatch.setattr("pipeline.batch.score.check_model_file", lambda path: None)
    with pytest.raises(Exception) as raised:
        run_batch_scoring(spark, cfg, layout, DAY, model=str(bogus))
    told = job_failure(raised.value)  # what the job prints (pipeline.cli.run_job), and that a retry may help
    assert isinstance(told, RetryableError)
    assert re.fullmatch(rf"scoring with swapped version file:[0-9a-f]{{12}} \({bogus}\) failed: ValueError: model "
                        rf"{bogus} refused: not a valid \.keras file \(not a readable zip archive\)", str(told))
    assert _folder_bytes(files.predictions) == published
    assert sorted(os.listdir(files.table("predictions"))) == [f"ds={OTHER_DAY}", f"ds={DAY}"]


@pytest.mark.slow
def test_a_day_landed_as_one_csv_file_is_read_like_ingest_reads_it(spark, small_mnist_model, two_scored_days):
    cfg, layout = two_scored_days
    files = layout.batch_files("2026-11-20")
    os.makedirs(files.landing)
    images = (np.asarray(small_mnist_model["images"][:20]) * 255).round().astype(int)
    header = ",".join(["label", *(f"pixel{i}" for i in range(IMAGE_PIXELS))])
    rows = [",".join(map(str, [label, *image])) for label, image in zip(small_mnist_model["labels"][:20], images,
                                                                          strict=True)]
    rows[3] = "3," + ",".join(["300"] * IMAGE_PIXELS)       # a pixel out of range: quarantined, like ingest does
    Path(files.landing, "arrivals.csv").write_text("\n".join([header, *rows]) + "\n")
    with pytest.raises(PipelineError, match=r"1 of 20 records failed record checks .*; the first: arrivals\.csv:3: "
                                            r"pixel value out of range \(not an integer 0-255\)$"):
        run_batch_scoring(spark, cfg, layout, files.ds, model=small_mnist_model["trained"])
    tolerant = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, max_quarantine_fraction=0.1))
    run_batch_scoring(spark, tolerant, layout, files.ds, model=small_mnist_model["trained"])
    predictions = spark.read.parquet(files.predictions)
    assert sorted(r["record_id"] for r in predictions.collect()) == sorted(
        f"arrivals.csv:{i}" for i in range(20) if i != 3)
    assert {r["source_file"] for r in predictions.collect()} == {"arrivals.csv"}
    assert [(r["record_id"], r["reason"]) for r in spark.read.parquet(files.quarantine).collect()] == [
        ("arrivals.csv:3", "pixel value out of range (not an integer 0-255)")]
    assert storage.read_json(files.validation_report)["input_kind"] == "csv"


class Killed(BaseException):
    """A kill between two of a scoring's moves (BaseException: nothing on the way catches it)."""


def stopping_after(moves: int):
    """outputs.publishing whose scoring is killed after `moves` of the day's four folders moved into place."""
    real, done = outputs.publishing, []

    @contextlib.contextmanager
    def publishing(final_path: str):
        with real(final_path) as tmp:
            yield tmp
            if len(done) == moves:
                raise Killed(final_path)
            done.append(final_path)
    return publishing


@pytest.mark.slow
def test_a_day_whose_scoring_was_killed_between_its_moves_is_not_read_until_rescored(spark, small_mnist_model,
                                                                                      make_config, monkeypatch):
    """Predictions, quarantine and images move before the reports folder (scoring.json): killed after one, two or
    three of the four moves, the day holds folders of two scorings. Drift, report and retraining refuse it in one
    line; the rerun the line asks for makes it whole."""
    from pipeline.batch import score
    from pipeline.batch.batch_report import run_batch_report
    from pipeline.batch.drift import run_drift_check
    from pipeline.day_publication import scored_day
    from pipeline.retrain.training_set import find_batch_days
    cfg = make_config()
    layout = Layout.from_config(cfg)
    files = layout.batch_files(DAY)
    simulate_day(cfg, files, COUNT, labels=True)
    run_batch_scoring(spark, cfg, layout, DAY, model=small_mnist_model["trained"])
    trained = scored_day(files)["model"]["version"]
    interrupted = (f"a scoring was interrupted between its moves; rerun jobs/score_batch.py --ds {DAY}")
    for moves, first_mixed in ((1, "predictions"), (2, "quarantine"), (3, "images")):
        with monkeypatch.context() as patch:
            patch.setattr(score.outputs, "publishing", stopping_after(moves))
            with pytest.raises(Killed):
                run_batch_scoring(spark, cfg, layout, DAY, model=small_mnist_model["untrained"])
        versions = {r["model_version"] for r in spark.read.parquet(files.predictions).collect()}
        assert versions != {trained} and storage.read_json(files.scoring)["model"]["version"] == trained
        for reader in (run_drift_check, run_batch_report):
            with pytest.raises(PipelineError, match=rf"the {first_mixed} of {DAY} .* are from another scoring than "
                                                    rf".*scoring\.json records: {interrupted}$"):
                reader(spark, cfg, layout, DAY)
        days = find_batch_days(layout, DAY)
        assert days.labelled == [] and days.skipped[0]["ds"] == DAY and interrupted in days.skipped[0]["reason"]
        run_batch_scoring(spark, cfg, layout, DAY, model=small_mnist_model["trained"])
        assert scored_day(files)["model"]["version"] == trained and find_batch_days(layout, DAY).labelled == [DAY]
