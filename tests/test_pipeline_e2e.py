"""The main job end to end: the test profile on the tiny world (model_1 and model_4 on two Horovod ranks), then a
rerun that skips completed stages; with tracking on, what MLflow holds after both, a smaller run whose best model is
worse than the champion, and a run with tracking off. The first run's training is also this suite's one proof of
what two ranks share (batch normalisation's moving statistics) and of where their services listen (sampled while it
trains)."""
import os
import re
import sys

import numpy as np
import pytest
from listening import ListeningSockets, is_loopback, listening_sockets
from tiny_world import PROFILE, tiny_overrides

from pipeline import storage
from pipeline.layout import Layout
from pipeline.run import run_pipeline
from pipeline.stages import STAGE_NAMES as STAGES

pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.horovod]

REPORT_SECTIONS = ["1. Data collection", "2. Exploratory data analysis", "3. Models", "4. Prediction",
                   "5. Tracking and registry", "6. Pipeline structure", "7. Libraries and versions",
                   "8. Known limitations and future work", "9. Conclusions", "10. References and acknowledgements"]
BN_MODEL = "model_4"   # the test profile's model with batch normalisation


@pytest.fixture(scope="module")
def quick_run(spark, tiny_world, tmp_path_factory):
    from pipeline.config import load_config
    root = tmp_path_factory.mktemp("e2e")
    cfg = load_config(None, PROFILE, tiny_overrides(root, tiny_world, "spark.master=local[2]", "train.num_workers=2",
                                                    "tracking.system_metrics_seconds=1"))
    layout = Layout.from_config(cfg)
    before = {(address, port) for _, address, port in listening_sockets()}
    watch = ListeningSockets()
    watch.start()
    try:
        first = run_pipeline(spark, cfg, layout)
    finally:
        watch.stopped.set()
        watch.join()
    listening = {"before": before, "seen": watch.seen, "after": listening_sockets()}
    second = run_pipeline(spark, cfg, layout)
    return cfg, layout, first, second, listening


# One model for one epoch at a tenth of the rate: its best is worse than the quick run's, on the same data.
SMALL_RUN = ["train.models={model_1: {epochs: 1, learning_rate: 0.0001}}", "evaluate.target_accuracy=0.5"]


@pytest.fixture(scope="module")
def worse_run(spark, tiny_world, quick_run):
    """After the quick run, in the same store: a run whose best model is worse than the champion."""
    import dataclasses

    from pipeline.config import load_config
    cfg = quick_run[0]
    small = load_config(None, PROFILE, [f"paths.input={tiny_world}", f"paths.data={cfg.paths.data}",
                                        f"paths.runs={cfg.paths.runs}", f"paths.mlflow={cfg.paths.mlflow}",
                                        "spark.master=local[2]", "train.num_workers=2",
                                        "tracking.system_metrics_seconds=1", *SMALL_RUN])
    assert dataclasses.replace(small, train=cfg.train, evaluate=cfg.evaluate) == cfg
    layout = Layout.from_config(small)
    return small, layout, run_pipeline(spark, small, layout)


@pytest.fixture(scope="module")
def untracked_run(spark, tiny_world, quick_run):
    """The same small run with tracking off, where importing MLflow would fail."""
    from pipeline.config import load_config
    cfg, layout = quick_run[:2]
    root = layout.run_root.rsplit("/", 2)[0]
    off = load_config(None, PROFILE, [f"paths.input={tiny_world}", f"paths.data={cfg.paths.data}",
                                      f"paths.runs={root}/runs-off", f"paths.mlflow={root}/mlflow-off",
                                      "spark.master=local[2]", "train.num_workers=2", "tracking.enabled=false",
                                      *SMALL_RUN])
    layout = Layout.from_config(off)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError from here on
        manifest = run_pipeline(spark, off, layout)
    return off, layout, manifest


def test_manifest_lists_every_stage_with_durations(quick_run):
    _, layout, first = quick_run[:3]
    assert [s["stage"] for s in first["stages"]] == list(STAGES)
    assert all(s["seconds"] >= 0 and not s["skipped"] for s in first["stages"])
    manifest = storage.read_json(layout.run_manifest)
    assert manifest["config"]["profile"] == PROFILE and manifest["machine"]["cores"] >= 1
    assert manifest["headline"]["best_model"] in quick_run[0].train.models
    evaluation = next(s["details"] for s in first["stages"] if s["stage"] == "evaluate")
    assert sorted(evaluation["models"]) == sorted(quick_run[0].train.models)
    assert all(m["test_accuracy"] > 0.8 for m in evaluation["models"].values()), evaluation["models"]


def test_report_has_every_section_and_no_empty_one(quick_run):
    layout = quick_run[1]
    report = storage.read_text(layout.report_md)
    headings = re.findall(r"^## (.+)$", report, flags=re.M)
    assert headings == REPORT_SECTIONS
    for body in re.split(r"^## .+$", report, flags=re.M)[1:]:
        assert len(body.strip()) > 200
    for placeholder in ("TODO", "TBD", "lorem", "None%", "nan", "placeholder", "XXX"):
        assert placeholder not in report
    html = storage.read_text(layout.report_html)
    # Four EDA figures, one training curve per model, the best model's confusion matrix and mistakes: all embedded.
    figures = re.findall(r"!\[[^]]*\]\((figures/[^)]+\.png)\)", report)
    assert len(set(figures)) == 4 + len(quick_run[0].train.models) + 2
    assert html.count("data:image/png;base64,") == len(figures) and 'src="figures/' not in html


def test_rerun_skips_completed_stages(quick_run):
    first, second = quick_run[2:4]
    skipped = {s["stage"] for s in second["stages"] if s["skipped"]}
    assert {"ingest", "prepare", "eda", "train", "evaluate"} <= skipped
    assert second["headline"]["target_met"] is first["headline"]["target_met"] is True
    assert second["headline"]["best_test_accuracy"] == first["headline"]["best_test_accuracy"]


def mlflow_store(cfg):
    from pipeline.tracking.store import connect
    return connect(cfg)


def training_runs(store) -> list:
    from pipeline.tracking.runs import TAG_KIND
    return store.client.search_runs([store.experiment_id], f"tags.`{TAG_KIND}` = 'training'")


def test_one_mlflow_run_per_model_with_every_epoch_even_after_the_rerun(quick_run):
    from pipeline.tracking.runs import PARENT_TAG, TAG_KIND, TAG_MODEL
    cfg, layout = quick_run[:2]
    store = mlflow_store(cfg)
    runs = training_runs(store)
    assert sorted(r.data.tags[TAG_MODEL] for r in runs) == sorted(cfg.train.models)
    parents = store.client.search_runs([store.experiment_id], f"tags.`{TAG_KIND}` = 'pipeline'")
    assert [p.info.run_name for p in parents] == [layout.run_id]
    for run in runs:
        model = run.data.tags[TAG_MODEL]
        assert run.data.tags[PARENT_TAG] == parents[0].info.run_id and run.info.status == "FINISHED"
        for metric in ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds"):
            points = store.client.get_metric_history(run.info.run_id, metric)
            assert [p.step for p in points] == list(range(1, cfg.train.models[model].epochs + 1)), (model, metric)
        assert run.data.params["data_fingerprint"] == storage.read_json(layout.curated_manifest)["fingerprint"]
        assert {"test_accuracy", "test_loss"} <= set(run.data.metrics)
        artifacts = {a.path for a in store.client.list_artifacts(run.info.run_id, "evaluation")}
        assert "evaluation/confusion_matrix.png" in artifacts and "evaluation/misclassified.png" in artifacts
    assert [a.path for a in store.client.list_artifacts(parents[0].info.run_id)] == ["report.html"]


def test_mlflow_runs_read_well_in_the_ui(quick_run):
    """Named model first, live-logged with system metrics and the data as dataset inputs, models named and
    described, the pipeline's run summarising the whole run."""
    cfg, layout, first = quick_run[:3]
    store = mlflow_store(cfg)
    client, name = store.client, cfg.tracking.registered_model
    curated = storage.read_json(layout.curated_manifest)
    for run in training_runs(store):
        model = run.data.tags["pipeline.model"]
        assert run.info.run_name == f"{model} · {layout.run_id}"
        assert [k for k in run.data.metrics if k.startswith("system/")], (model, "no system metrics")
        assert {(d.dataset.name, d.dataset.digest) for d in run.inputs.dataset_inputs} == {
            ("mnist-train", curated["fingerprint"]), ("mnist-validation", curated["fingerprint"])}
        version = client.search_model_versions(f"name = '{name}' and run_id = '{run.info.run_id}'")[0]
        from pipeline.tracking.runs import logged_model_id
        logged = client.get_logged_model(logged_model_id(version))
        assert logged.name == model and {m.key for m in logged.metrics} >= {"test_accuracy", "test_loss"}
        assert version.description.startswith(f"{model} from pipeline run {layout.run_id}: ")
        assert "0-255 integers" in version.description and "Test accuracy 0." in version.description
    assert "make serve" in client.get_registered_model(name).description
    [parent] = store.client.search_runs([store.experiment_id], "tags.`pipeline.kind` = 'pipeline'")
    assert parent.data.tags["pipeline.best_model"] == first["headline"]["best_model"]
    assert parent.data.metrics["best_test_accuracy"] == pytest.approx(first["headline"]["best_test_accuracy"])
    assert {f"{m}.test_accuracy" for m in cfg.train.models} <= set(parent.data.metrics)
    assert parent.data.params["train_images"] == str(curated["counts"]["train"])
    assert {"stage_seconds.ingest", "stage_seconds.train", "stage_seconds.evaluate"} <= set(parent.data.metrics)
    stages = sum(v for k, v in parent.data.metrics.items() if k.startswith("stage_seconds."))
    assert (parent.info.end_time - parent.info.start_time) / 1000 >= stages - 1  # from the start to the report


def test_a_version_per_model_the_best_is_challenger_and_the_first_champion(quick_run):
    cfg, layout, first = quick_run[:3]
    client, name = mlflow_store(cfg).client, cfg.tracking.registered_model
    versions = {v.tags["model"]: str(v.version) for v in client.search_model_versions(f"name = '{name}'")}
    assert sorted(versions) == sorted(cfg.train.models)
    best = first["headline"]["best_model"]
    assert str(client.get_model_version_by_alias(name, "challenger").version) == versions[best]
    assert str(client.get_model_version_by_alias(name, "champion").version) == versions[best]
    decision = storage.read_json(layout.evaluation_files.promotion)
    assert (decision["promoted"], decision["champion_version"], decision["challenger_version"]) == \
        (True, None, versions[best])
    assert decision["challenger_accuracy"] == first["headline"]["best_test_accuracy"]
    record = storage.read_json(layout.tracking_record)
    assert {m: e["version"] for m, e in record["models"].items()} == versions
    report = storage.read_text(layout.report_md)
    assert f"was **promoted to champion**: {decision['reason']}" in report
    assert f"models:/{name}@champion" in report


def test_a_worse_run_scores_the_champion_on_its_test_set_and_keeps_it(quick_run, worse_run):
    cfg, first = quick_run[0], quick_run[2]
    small, layout, _ = worse_run
    client, name = mlflow_store(cfg).client, cfg.tracking.registered_model
    decision = storage.read_json(layout.evaluation_files.promotion)
    champion = str(client.get_model_version_by_alias(name, "champion").version)
    assert decision["promoted"] is False and decision["champion_version"] == champion
    assert decision["champion_scored_on_this_test_set"] is True  # another run's model: scored here, same scorer
    assert decision["champion_accuracy"] == first["headline"]["best_test_accuracy"]  # same test set, same figure
    assert decision["challenger_accuracy"] < decision["champion_accuracy"]
    assert str(client.get_model_version_by_alias(name, "challenger").version) == decision["challenger_version"]
    assert client.get_model_version(name, decision["challenger_version"]).tags["promotion"] == "kept"
    assert len(training_runs(mlflow_store(cfg))) == len(cfg.train.models) + 1   # the quick run's, and this one's


def test_predict_by_alias_after_the_runs(spark, quick_run, worse_run, tmp_path):
    from pipeline.predict.stage import run_prediction
    cfg, layout = quick_run[:2]
    name = cfg.tracking.registered_model
    champion = str(mlflow_store(cfg).client.get_model_version_by_alias(name, "champion").version)
    summary = run_prediction(spark, cfg, layout, model=f"models:/{name}@champion", output=str(tmp_path / "p")).details
    rows = spark.read.parquet(str(tmp_path / "p" / "predictions.parquet")).groupBy("model_version").count().collect()
    assert summary["model_version"] == champion and [r["model_version"] for r in rows] == [champion]


def test_tracking_off_runs_as_before_and_writes_no_store(untracked_run):
    cfg, layout, manifest = untracked_run
    assert [s["stage"] for s in manifest["stages"]] == list(STAGES)
    assert not storage.exists(cfg.resolve(cfg.paths.mlflow))
    assert not storage.exists(layout.tracking_record) and not storage.exists(layout.evaluation_files.promotion)
    assert "Tracking was off" in storage.read_text(layout.report_md)


def test_rank_0_wrote_tensorboard_logs_for_every_model(quick_run):
    from pathlib import Path
    cfg, layout = quick_run[:2]
    for model in cfg.train.models:
        assert list(Path(layout.tensorboard_dir(model)).glob("validation/events.out.tfevents.*")), model


# --- two ranks: what they share, where they listen ------------------------------------------------------------

def test_ranks_agree_on_batch_norm_moving_statistics(quick_run):
    workers = storage.read_json(quick_run[1].history(BN_MODEL))["workers"]
    assert [w["rank"] for w in workers] == [0, 1]
    assert workers[0]["trainable_checksum"] == pytest.approx(workers[1]["trainable_checksum"], rel=1e-6)
    assert workers[0]["non_trainable_checksum"] > 0
    assert workers[0]["non_trainable_checksum"] == pytest.approx(workers[1]["non_trainable_checksum"], rel=1e-6)


def test_saved_model_holds_the_averaged_moving_statistics(quick_run):
    from pipeline.model_files import load_keras_model
    layout = quick_run[1]
    history = storage.read_json(layout.history(BN_MODEL))
    # The ranks' checksums are taken after the last epoch; model_4 keeps its best, which after a warm-up epoch is
    # the second (its first runs at the warm-up's rising rate).
    assert history["kept_epoch"] == history["epochs_completed"], history["epochs"]
    model = load_keras_model(layout.model_file(BN_MODEL))
    saved = sum(float(np.abs(w.numpy()).sum(dtype=np.float64)) for w in model.non_trainable_weights)
    assert saved == pytest.approx(history["workers"][0]["non_trainable_checksum"], rel=1e-6)


def test_training_services_listen_on_loopback_only(quick_run):
    listening = quick_run[4]
    new = {(pid, address, port) for pid, address, port in listening["seen"]
           if (address, port) not in listening["before"]}
    # Horovod's driver service and Gloo rendezvous (this process) and a task service in each Spark task.
    assert len({pid for pid, _, _ in new}) >= 3, sorted(new)
    assert all(is_loopback(address) for _, address, _ in listening["seen"]), sorted(listening["seen"])


def test_training_services_are_closed_when_training_ends(quick_run):
    """Horovod stops its rendezvous server without closing the socket; run_horovod closes it."""
    listening = quick_run[4]
    left = {(address, port) for pid, address, port in listening["after"] if pid == os.getpid()}
    assert left <= listening["before"], sorted(left - listening["before"])
