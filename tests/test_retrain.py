"""Retraining's parts, each on its own: the labels file and its join with a day's images, which days count, the
assembled training set (rows, origins, no duplicate on a rerun), the retraining layout and config, the decision
record. The whole job runs in tests/test_retrain_e2e.py, through the real registry."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pyspark.sql import Row
from pyspark.testing import assertDataFrameEqual

from jobs.retrain import _main
from pipeline import storage
from pipeline.errors import EXIT_NOT_RETRYABLE, PipelineError
from pipeline.layout import Layout, RetrainingFiles
from pipeline.retrain.decision import decision_record, decision_summary, untrained_record
from pipeline.retrain.job import retraining_config, retraining_layout
from pipeline.retrain.labels import check_labels_known, parse_labels, read_labels, with_labels
from pipeline.retrain.training_set import BatchDays, assemble_training_set, find_batch_days
from pipeline.run_ids import default_run_id
from pipeline.schema import BATCH_IMAGES_SCHEMA, CURATED_SCHEMA, TRAINING_SET_SCHEMA

LABELS = "labels.csv"


def image(value: float) -> list[float]:
    return [value] * 784


def write_day(spark, layout: Layout, ds: str, images: dict[str, float] | None, labels: str | None = None,
              quarantined: list[str] = ()) -> None:
    """One day as daily scoring leaves it: the images partition (record_id -> a constant pixel value), maybe
    its quarantine, and the labels file in the landing folder."""
    files = layout.batch_files(ds)
    if images is not None:
        rows = [(record, record, image(value)) for record, value in images.items()]
        spark.createDataFrame(rows, BATCH_IMAGES_SCHEMA).coalesce(1).write.parquet(files.images)
    if quarantined:
        spark.createDataFrame([(r, "unreadable") for r in quarantined], "record_id string, reason string") \
            .write.parquet(files.quarantine)
    Path(files.landing).mkdir(parents=True, exist_ok=True)
    if labels is not None:
        Path(files.labels).write_text(labels)


@pytest.fixture
def batch_config(make_config, tmp_path):
    def _make(*overrides: str):
        return make_config(f"paths.landing={tmp_path / 'landing'}", f"paths.batches={tmp_path / 'batches'}",
                           *overrides)
    return _make


# --- the labels file -------------------------------------------------------------------------------------------

def test_a_labels_file_parses_into_file_label_rows():
    text = "\ufefffile,label\nscans/a.png,3\n\n b.png , 0\nc.png,9\n"
    assert parse_labels(text, LABELS) == [("scans/a.png", 3), ("b.png", 0), ("c.png", 9)]


@pytest.mark.parametrize("text, message", [
    ("", "labels file labels.csv must start with the header 'file,label', found 'an empty file'"),
    ("image,digit\na.png,1\n", "must start with the header 'file,label', found 'image,digit'"),
    ("file,label\na.png\n", "labels.csv line 2: expected 2 fields \\(file,label\\), found 1"),
    ("file,label\na.png,1,x\n", "line 2: expected 2 fields \\(file,label\\), found 3"),
    ("file,label\na.png,1\nb.png,seven\n", "line 3: label 'seven' of 'b.png' is not a class 0..9"),
    ("file,label\na.png,10\n", "line 2: label '10' of 'a.png' is not a class 0..9"),
    ("file,label\na.png,-1\n", "line 2: label '-1' of 'a.png' is not a class 0..9"),
    ("file,label\na.png,\n", "line 2: label '' of 'a.png' is not a class 0..9"),
    ("file,label\n,4\n", "line 2: the file name is empty"),
    ("file,label\na.png,1\nb.png,2\na.png,1\n", "line 4: 'a.png' is labelled twice \\(first on line 2\\)"),
])
def test_a_bad_labels_file_is_one_line_naming_it_and_the_problem(text, message):
    with pytest.raises(PipelineError, match=message):
        parse_labels(text, LABELS)


def test_a_labels_file_that_is_not_text_is_refused(spark, tmp_path):
    path = tmp_path / LABELS
    path.write_bytes(b"file,label\n\xff\xfe.png,1\n")
    with pytest.raises(PipelineError, match=f"labels file {path} is not UTF-8 text"):
        read_labels(spark, str(path))


def test_labelled_images_become_training_rows_of_their_day(spark):
    images = spark.createDataFrame([("a.png", "a.png", image(0.1)), ("b.png", "b.png", image(0.2)),
                                    ("c.png", "c.png", image(0.3))], BATCH_IMAGES_SCHEMA)
    labels = spark.createDataFrame([("c.png", 7), ("a.png", 1)], "file string, label int")
    expected = spark.createDataFrame([("a.png", image(0.1), 1, "2026-11-24"), ("c.png", image(0.3), 7, "2026-11-24")],
                                     TRAINING_SET_SCHEMA)
    labelled = with_labels(images, labels, "2026-11-24")  # b.png has no label yet: left out
    assertDataFrameEqual(labelled, expected)
    assert labelled.columns == ["record_id", "image", "label", "origin"]


def test_labels_for_files_the_day_does_not_have_are_refused(spark):
    images = spark.createDataFrame([("a.png", "a.png", image(0.1))], BATCH_IMAGES_SCHEMA)
    labels = spark.createDataFrame([("a.png", 1), ("z.png", 2), ("y.png", 3)], "file string, label int")
    with pytest.raises(PipelineError, match="labels file day/labels.csv labels 2 file\\(s\\) that are not among the "
                                            "day's images, e.g. 'y.png'"):
        check_labels_known(labels, images, None, "day/labels.csv")


def test_labels_for_quarantined_images_are_known_and_not_trained_on(spark):
    images = spark.createDataFrame([("a.png", "a.png", image(0.1))], BATCH_IMAGES_SCHEMA)
    quarantined = spark.createDataFrame([("bad.png", "not an image")], "record_id string, reason string")
    labels = spark.createDataFrame([("a.png", 1), ("bad.png", 2)], "file string, label int")
    check_labels_known(labels, images, quarantined, "day/labels.csv")
    assert [r["record_id"] for r in with_labels(images, labels, "2026-11-24").collect()] == ["a.png"]


# --- which days count ------------------------------------------------------------------------------------------

def test_labelled_days_up_to_ds_count_and_the_others_are_reported(spark, batch_config):
    layout = Layout.from_config(batch_config())
    write_day(spark, layout, "2026-11-20", {"a.png": 0.1}, "file,label\na.png,1\n")
    write_day(spark, layout, "2026-11-21", {"a.png": 0.1})                              # no labels yet
    write_day(spark, layout, "2026-11-22", None, "file,label\na.png,1\n")               # labels, never scored
    write_day(spark, layout, "2026-11-23", {"a.png": 0.1}, "file,label\na.png,2\n")
    write_day(spark, layout, "2026-11-25", {"a.png": 0.1}, "file,label\na.png,1\n")     # after ds
    Path(layout.landing_root, "ds=2026-13-01").mkdir()                                  # not a date
    Path(layout.landing_root, "incoming").mkdir()
    days = find_batch_days(layout, "2026-11-24")
    assert days == BatchDays(["2026-11-20", "2026-11-23"], [
        {"ds": "2026-11-21", "reason": "no labels.csv yet"},
        {"ds": "2026-11-22", "reason": "labels.csv but no images partition: the day was not scored"}])


def test_a_day_whose_first_scoring_was_killed_before_its_summary_does_not_count(spark, batch_config):
    from pipeline.day_publication import stamp
    layout = Layout.from_config(batch_config())
    write_day(spark, layout, "2026-11-20", {"a.png": 0.1}, "file,label\na.png,1\n")
    stamp(layout.batch_files("2026-11-20").images, "token-of-a-scoring-killed-before-scoring.json")
    days = find_batch_days(layout, "2026-11-24")
    assert days.labelled == []
    assert days.skipped[0]["reason"].endswith("a scoring was interrupted between its moves; "
                                              "rerun jobs/score_batch.py --ds 2026-11-20")


def test_the_newest_days_are_trained_on_or_held_out_by_config(batch_config):
    days = BatchDays(["2026-11-20", "2026-11-21", "2026-11-23"])
    held_out = batch_config("retrain.newest_days=2").retrain   # the default
    trained = batch_config("retrain.newest_days=2", "retrain.hold_out_newest=false").retrain
    assert days.newest(trained) == ["2026-11-21", "2026-11-23"]
    assert days.for_training(trained) == ["2026-11-20", "2026-11-21", "2026-11-23"]
    assert days.for_training(held_out) == ["2026-11-20"]


# --- the training set ------------------------------------------------------------------------------------------

@pytest.fixture
def prepared(spark, batch_config):
    """A retraining layout over a prepared train split of 6 rows (2 rows per Parquet file) and its manifest."""
    cfg = batch_config("data.row_group_rows=2", "retrain.hold_out_newest=false")  # every labelled day trains
    layout = retraining_layout(retraining_config(cfg), "2026-11-24")
    rows = [(f"train:{i}", image(i / 10), i % 10) for i in range(6)]
    spark.createDataFrame(rows, CURATED_SCHEMA).coalesce(1).write.option("maxRecordsPerFile", 2) \
        .parquet(layout.prepared("train"))
    storage.write_json(layout.prepared_manifest, {"fingerprint": "prepared-1", "counts": {
        "train": 6, "validation": 3, "test": 4}, "label_counts": {"train": {str(i): 1 for i in range(6)}},
        "num_classes": 10})
    write_day(spark, layout, "2026-11-20", {"a.png": 0.5, "b.png": 0.6, "c.png": 0.7}, "file,label\na.png,4\nb.png,5\n")
    write_day(spark, layout, "2026-11-23", {"a.png": 0.8, "d.png": 0.9}, "file,label\na.png,8\nd.png,9\n",
              quarantined=["e.png"])
    return cfg, layout


def training_rows(spark, layout):
    return spark.read.parquet(layout.curated("train")).select("record_id", "label", "origin")


EXPECTED_ROWS = [*[(f"train:{i}", i, "mnist") for i in range(6)], ("a.png", 4, "2026-11-20"),
                 ("b.png", 5, "2026-11-20"), ("a.png", 8, "2026-11-23"), ("d.png", 9, "2026-11-23")]


def test_the_training_set_is_the_original_split_plus_every_labelled_batch(spark, prepared):
    cfg, layout = prepared
    days = find_batch_days(layout, "2026-11-24")
    manifest, skipped = assemble_training_set(spark, cfg, layout, "2026-11-24", days)
    assert not skipped
    expected = spark.createDataFrame(EXPECTED_ROWS, "record_id string, label int, origin string")
    assertDataFrameEqual(training_rows(spark, layout), expected)
    assert manifest["origins"] == {"mnist": 6, "2026-11-20": 2, "2026-11-23": 2}
    assert manifest["counts"] == {"train": 10, "validation": 3, "test": 4}
    assert manifest["label_counts"]["train"] == {"0": 1, "1": 1, "2": 1, "3": 1, "4": 2, "5": 2, "8": 1, "9": 1}
    assert (manifest["labelled_days"], manifest["prepared_fingerprint"]) == (["2026-11-20", "2026-11-23"], "prepared-1")
    assert manifest == storage.read_json(RetrainingFiles(layout.retraining_root).manifest)


def test_the_training_set_keeps_several_row_groups_for_the_horovod_shards(spark, prepared):
    cfg, layout = prepared
    assemble_training_set(spark, cfg, layout, "2026-11-24", find_batch_days(layout, "2026-11-24"))
    files = pq.ParquetDataset(layout.curated("train"), use_legacy_dataset=False).fragments
    groups = [fragment.metadata.num_row_groups for fragment in files]
    sizes = [fragment.metadata.num_rows for fragment in files]
    assert sum(groups) >= 5 and max(sizes) <= cfg.data.row_group_rows


def test_a_rerun_keeps_the_training_set_and_never_duplicates_a_row(spark, prepared):
    cfg, layout = prepared
    days = find_batch_days(layout, "2026-11-24")
    first, _ = assemble_training_set(spark, cfg, layout, "2026-11-24", days)
    again, skipped = assemble_training_set(spark, cfg, layout, "2026-11-24", days)
    forced, forced_skipped = assemble_training_set(spark, cfg, layout, "2026-11-24", days, force=True)
    assert (skipped, forced_skipped) == (True, False)
    assert first["fingerprint"] == again["fingerprint"] == forced["fingerprint"]
    assert training_rows(spark, layout).count() == len(EXPECTED_ROWS)


def test_a_corrected_label_rebuilds_the_training_set(spark, prepared):
    cfg, layout = prepared
    first, _ = assemble_training_set(spark, cfg, layout, "2026-11-24", find_batch_days(layout, "2026-11-24"))
    Path(layout.batch_files("2026-11-20").labels).write_text("file,label\na.png,4\nb.png,6\n")
    second, skipped = assemble_training_set(spark, cfg, layout, "2026-11-24", find_batch_days(layout, "2026-11-24"))
    assert not skipped and second["fingerprint"] != first["fingerprint"]
    assert training_rows(spark, layout).filter("record_id = 'b.png'").collect() == [Row("b.png", 6, "2026-11-20")]


def test_held_out_newest_days_stay_out_of_the_training_set(spark, prepared):
    cfg, layout = prepared
    cfg = dataclasses.replace(cfg, retrain=dataclasses.replace(cfg.retrain, hold_out_newest=True))
    manifest, _ = assemble_training_set(spark, cfg, layout, "2026-11-24", find_batch_days(layout, "2026-11-24"))
    assert manifest["origins"] == {"mnist": 6, "2026-11-20": 2}
    assert training_rows(spark, layout).filter("origin = '2026-11-23'").count() == 0


def test_a_bad_labels_file_stops_the_assembly_and_publishes_nothing(spark, prepared):
    cfg, layout = prepared
    Path(layout.batch_files("2026-11-23").labels).write_text("file,label\na.png,8\na.png,8\n")
    with pytest.raises(PipelineError, match="ds=2026-11-23/labels.csv line 3: 'a.png' is labelled twice"):
        assemble_training_set(spark, cfg, layout, "2026-11-24", find_batch_days(layout, "2026-11-24"))
    assert not storage.exists(layout.curated("train"))
    assert not storage.exists(layout.curated_manifest)


# --- layout and config -----------------------------------------------------------------------------------------

def test_a_retraining_layout_trains_on_its_own_split_and_keeps_validation_and_test(batch_config, tmp_path):
    cfg = retraining_config(batch_config())
    base = Layout.from_config(cfg)
    layout = retraining_layout(cfg, "2026-11-24")
    root = f"{tmp_path}/batches/retrain/ds=2026-11-24"
    assert (layout.curated("train"), layout.curated_manifest) == (f"{root}/train", f"{root}/manifest.json")
    assert RetrainingFiles(layout.retraining_root).decision == f"{root}/decision.json"
    assert layout.batch_files("2026-11-24").retraining == RetrainingFiles(root)
    assert layout.batch_files("2026-11-24").retrain_decision == f"{root}/decision.json"
    assert (layout.curated("validation"), layout.curated("test")) == (base.curated("validation"), base.curated("test"))
    assert (layout.prepared("train"), layout.prepared_manifest) == (base.curated("train"), base.curated_manifest)
    assert layout.run_root == f"{tmp_path}/runs/{layout.run_id}"


def test_the_retraining_run_id_is_stable_per_day_and_apart_from_normal_runs(batch_config):
    cfg = retraining_config(batch_config())
    run_id = retraining_layout(cfg, "2026-11-24").run_id
    assert run_id.startswith("retrain-2026-11-24-full-") and run_id != default_run_id(cfg)
    assert retraining_layout(retraining_config(batch_config()), "2026-11-24").run_id == run_id
    assert retraining_layout(cfg, "2026-11-25").run_id != run_id
    assert retraining_layout(retraining_config(batch_config("retrain.epochs=1")), "2026-11-24").run_id != run_id


def test_the_retraining_config_keeps_each_models_recipe_and_overrides_only_the_epochs(batch_config):
    from pipeline.config import REPO_ROOT, load_config
    local = load_config(REPO_ROOT / "conf" / "local.yaml")
    retrained = retraining_config(dataclasses.replace(local, retrain=dataclasses.replace(local.retrain, epochs=2)))
    assert retrained.train.models == {name: dataclasses.replace(recipe, epochs=2)
                                      for name, recipe in local.train.models.items()}
    assert retraining_config(local).train.models == local.train.models


def test_the_retraining_config_trains_the_chosen_models_for_the_chosen_epochs(batch_config):
    cfg = batch_config("retrain.epochs=2")
    assert {n: m.epochs for n, m in retraining_config(cfg, "model_3, model_1").train.models.items()} == {
        "model_3": 2, "model_1": 2}
    assert {n: m.epochs for n, m in retraining_config(batch_config()).train.models.items()} == {
        "model_1": 5, "model_2": 10, "model_3": 12}
    with pytest.raises(PipelineError, match="--models: unknown model 'model_9' \\(configured in train.models: "
                                            "model_1, model_2, model_3\\)"):
        retraining_config(cfg, "model_1,model_9")
    with pytest.raises(PipelineError, match="retrain.models: unknown model ' , '"):
        retraining_config(batch_config("retrain.models=' , '"))


def test_the_job_refuses_a_ds_that_is_not_a_date_before_starting_spark(capsys):
    assert _main(["--ds", "2026-02-30"]) == EXIT_NOT_RETRYABLE
    assert "ERROR [retrain]: --ds 2026-02-30: not a real date (day is out of range for month)" in \
        capsys.readouterr().err


# --- the decision record -------------------------------------------------------------------------------------

CONDITIONS = [{"name": "target", "passed": True, "detail": "challenger test accuracy 0.9500 meets the target 0.9000"},
              {"name": "test_set", "passed": True, "detail": "beats the champion's 0.9300"},
              {"name": "newest_batches", "passed": True, "detail": "within their sampling error 0.0565"}]
DECISION = {"promoted": True, "challenger_version": "7", "challenger_accuracy": 0.95, "champion_version": "3",
            "champion_accuracy": 0.93, "target": 0.9, "margin": 0.005, "reason": "beats the champion",
            "registered_model": "digits", "decided_at": "2026-11-24T02:10:00+00:00", "key": "k1",
            "conditions": CONDITIONS,
            "evidence": {"challenger": {"version": "7", "test": {"accuracy": 0.95, "images": 1000},
                                        "newest": {"accuracy": 0.9, "images": 40}},
                         "champion": {"version": "3", "test": {"accuracy": 0.93, "images": 1000},
                                      "newest": {"accuracy": 0.85, "images": 40}}}}


def test_the_decision_records_both_models_on_both_sets_the_recipe_and_each_condition():
    from pipeline.config import ModelConfig
    newest = {"days": ["2026-11-23"], "rows": 40, "in_training_data": True, "challenger": {"accuracy": 0.9},
              "champion": {"accuracy": 0.85}}
    training = {"fingerprint": "f", "origins": {"mnist": 6}, "labelled_days": [], "skipped_days": []}
    recipe = ModelConfig(epochs=3, keep="best", augment=True, schedule="cosine", batch_size=128, learning_rate=0.002)
    record = decision_record("2026-11-24", "retrain-x", DECISION, "model_4", recipe, newest, training)
    assert record == {
        "ds": "2026-11-24", "run_id": "retrain-x", "trained": True, "promoted": True,
        "reason": "beats the champion", "target": 0.9, "margin": 0.005, "conditions": CONDITIONS,
        "decided_at": "2026-11-24T02:10:00+00:00", "decision_key": "k1",
        "challenger": {"model": "model_4", "version": "7", "recipe": {
            "epochs": 3, "keep": "best", "augment": True, "schedule": "cosine", "batch_size": 128,
            "learning_rate": 0.002}, "test_accuracy": 0.95, "test_images": 1000, "newest_batches_accuracy": 0.9,
            "newest_batches_images": 40},
        "champion": {"name": "digits", "version": "3", "test_accuracy": 0.93, "test_images": 1000,
                     "newest_batches_accuracy": 0.85, "newest_batches_images": 40},
        "newest_batches": {"days": ["2026-11-23"], "rows": 40, "in_training_data": True},
        "training_data": training}
    assert json.loads(json.dumps(record)) == record
    summary = decision_summary(record)
    assert "| test set (1000 images) | 0.9500 | 0.9300 |" in summary
    assert "| newest labelled batches (2026-11-23; 40 images, trained on) | 0.9000 | 0.8500 |" in summary
    assert "- **newest_batches** (passed): within their sampling error 0.0565" in summary


def test_with_nothing_to_train_on_the_decision_keeps_the_champion():
    record = untrained_record("2026-11-24", "retrain-x", "no labelled batch", {"skipped_days": []})
    assert record == {
        "ds": "2026-11-24", "run_id": "retrain-x", "trained": False, "promoted": False,
        "reason": "no labelled batch", "challenger": None, "champion": None, "newest_batches": None,
        "training_data": {"skipped_days": []}}
    assert decision_summary(record) == "# Retraining of 2026-11-24: champion kept\n\nno labelled batch.\n"
