"""Training stage: a real 2-worker Horovod run on Spark local[2] over a small stratified MNIST subset.

One module-scoped run is interrupted after epoch 1 of 2 (train.stop_after_epochs=1), then rerun to completion
and run a third time (skipped); the tests below assert on what those three invocations produced. Batch
normalisation across ranks and the services' listening addresses are proven by the end-to-end run's training
(tests/test_pipeline_e2e.py), which trains model_4 on two ranks anyway.

The tests that launch Horovod (that run's, the forced and full-disk ones, the live run) are `slow`: 20-55 s each,
tens of seconds like every end-to-end run, so `make test-fast` keeps only the checks that launch no Horovod training.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from pipeline.config import REPO_ROOT
from pipeline.errors import PipelineError
from pipeline.formats.idx import read_array
from pipeline.layout import CheckpointFiles, Layout
from pipeline.schema import CURATED_SCHEMA
from pipeline.train.stage import run_training

pytestmark = pytest.mark.horovod

MNIST = REPO_ROOT / "data" / "mnist"
TRAIN_PER_CLASS, VALIDATION_PER_CLASS = 300, 60   # 3,000 training and 600 validation rows
RUN_ID = "test-train"


def read_idx(images_file: str, labels_file: str) -> tuple[np.ndarray, np.ndarray]:
    """Bundled MNIST images (n x 784 uint8) and labels, read by the pipeline's own IDX reader."""
    return read_array(MNIST / images_file).reshape(-1, 784), read_array(MNIST / labels_file)


def stratified_indices(labels: np.ndarray, per_class: tuple[int, int], seed: int) -> tuple[np.ndarray, ...]:
    """Disjoint train / validation picks with the same number of rows of every digit."""
    rng = np.random.default_rng(seed)
    train, validation = [], []
    for digit in range(10):
        picked = rng.permutation(np.flatnonzero(labels == digit))[:sum(per_class)]
        train.append(picked[:per_class[0]])
        validation.append(picked[per_class[0]:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(validation))


def write_curated(spark, images, labels, indices, path: str, files: int) -> None:
    """CURATED_SCHEMA Parquet, `files` files of one row group each: more row groups than Horovod workers."""
    frame = pd.DataFrame({"record_id": [f"train-images-idx3-ubyte.gz:{i}" for i in indices],
                          "image": list((images[indices] / 255.0).astype(np.float32)),
                          "label": labels[indices].astype(np.int32)})
    spark.createDataFrame(frame, CURATED_SCHEMA).repartition(files).write.mode("overwrite").parquet(path)


def curated_layout(root: Path) -> Layout:
    """A layout whose curated data lives under `root` (the only part of it these tests write)."""
    from pipeline.config import load_config
    return dataclasses.replace(Layout.from_config(load_config(None, "full", [])), curated_root=str(root))


@pytest.fixture(scope="module")
def curated_subset(spark, tmp_path_factory) -> Path:
    """A curated data root (train/, validation/, manifest.json) as the data stage lays it out."""
    root = tmp_path_factory.mktemp("curated")
    curated = curated_layout(root)
    images, labels = read_idx("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    train, validation = stratified_indices(labels, (TRAIN_PER_CLASS, VALIDATION_PER_CLASS), seed=3)
    write_curated(spark, images, labels, train, curated.curated("train"), files=8)
    write_curated(spark, images, labels, validation, curated.curated("validation"), files=3)
    counts = {"train": len(train), "validation": len(validation)}
    Path(curated.curated_manifest).write_text(json.dumps({"fingerprint": "test-subset", "counts": counts,
                                                          "image_shape": [28, 28, 1], "num_classes": 10}))
    return root


def layout_over(cfg, curated_root: Path) -> Layout:
    layout = Layout.from_config(cfg, RUN_ID)
    return dataclasses.replace(layout, curated_root=str(curated_root))


class StageLog(logging.Handler):
    """Collects the training stage's log lines across the invocations of one module-scoped run."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def interrupted_then_resumed(spark, curated_subset, tmp_path_factory):
    """model_1 for 2 epochs on 2 workers: stopped after epoch 1, rerun (resumes), rerun again (skips)."""
    from pipeline.config import load_config
    runs = tmp_path_factory.mktemp("runs")
    base = [f"paths.runs={runs}", f"paths.mlflow={runs / 'mlflow'}", "spark.master=local[2]",
            "train.models={model_1: {epochs: 2}}", "train.num_workers=2"]
    stopped_cfg = load_config(None, "full", [*base, "train.stop_after_epochs=1"])
    cfg = load_config(None, "full", base)
    handler, logger = StageLog(), logging.getLogger("pipeline.train.stage")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        first = run_training(spark, stopped_cfg, layout_over(stopped_cfg, curated_subset))
        runs_after_stop = [(r.info.status, len(_client(cfg).get_metric_history(r.info.run_id, "val_accuracy")))
                           for r in _training_runs(cfg)]
        layout = layout_over(cfg, curated_subset)
        after_stop = json.loads(Path(layout.history("model_1")).read_text())
        state_after_stop = json.loads(Path(CheckpointFiles(layout.checkpoint_dir("model_1")).state).read_text())
        second = run_training(spark, cfg, layout)
        third = run_training(spark, cfg, layout)
    finally:
        logger.removeHandler(handler)
    final = json.loads(Path(layout.history("model_1")).read_text())
    return {"summaries": (first.details, second.details, third.details), "results": (first, second, third),
            "after_stop": after_stop, "state_after_stop": state_after_stop, "final": final,
            "layout": layout, "cfg": cfg, "log": handler.lines, "runs_after_stop": runs_after_stop}


def _client(cfg):
    from pipeline.tracking.store import connect
    return connect(cfg).client


def _training_runs(cfg) -> list:
    from pipeline.tracking.runs import TAG_KIND
    from pipeline.tracking.store import connect
    store = connect(cfg)
    return store.client.search_runs([store.experiment_id], f"tags.`{TAG_KIND}` = 'training'")


@pytest.mark.slow
def test_a_stopped_run_leaves_one_epoch_and_a_checkpoint(interrupted_then_resumed):
    after_stop = interrupted_then_resumed["after_stop"]
    assert after_stop["complete"] is False
    assert [e["epoch"] for e in after_stop["epochs"]] == [1]
    assert interrupted_then_resumed["summaries"][0]["model_1"]["epochs"] == 1
    state = interrupted_then_resumed["state_after_stop"]  # read before the rerun checkpoints its own epoch
    assert state["epoch"] == 1 and state["epochs"] == after_stop["epochs"]


@pytest.mark.slow
def test_rerun_resumes_from_the_checkpoint_instead_of_restarting(interrupted_then_resumed):
    final, after_stop = interrupted_then_resumed["final"], interrupted_then_resumed["after_stop"]
    assert "resuming model_1 from epoch 1" in interrupted_then_resumed["log"]
    assert [e["epoch"] for e in final["epochs"]] == [1, 2]
    assert final["epochs"][0] == after_stop["epochs"][0]  # epoch 1 kept as it was, not retrained
    assert final["resumed_from_epoch"] == 1
    assert final["epochs_completed"] == final["epochs_planned"] == 2
    assert final["complete"] is True
    checkpoint = CheckpointFiles(interrupted_then_resumed["layout"].checkpoint_dir("model_1"))
    state = json.loads(Path(checkpoint.state).read_text())
    assert state["epoch"] == 2 and state["epochs"] == final["epochs"]  # the resumed run checkpointed its epoch


@pytest.mark.slow
def test_a_finished_model_is_skipped(interrupted_then_resumed):
    first, second, third = interrupted_then_resumed["summaries"]
    assert second["model_1"]["skipped"] is False
    assert third["model_1"] == {**second["model_1"], "skipped": True}
    assert any("model_1 already trained" in line for line in interrupted_then_resumed["log"])
    results = interrupted_then_resumed["results"]
    assert [r.skipped for r in results] == [False, False, True]
    assert results[2].outputs == {"model_1": interrupted_then_resumed["layout"].model_dir("model_1")}


@pytest.mark.slow
def test_a_forced_retraining_builds_beside_and_a_failed_one_keeps_the_model(spark, interrupted_then_resumed,
                                                                            curated_subset, monkeypatch):
    """`train --force` used to delete the model first: a failed or killed forced run left none."""
    import shutil

    from pipeline.errors import RetryableError
    from pipeline.train import stage
    cfg = interrupted_then_resumed["cfg"]
    # Untracked: the module's store keeps exactly the runs the tests above count.
    cfg = dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, enabled=False))
    layout = dataclasses.replace(layout_over(cfg, curated_subset), run_root=f"{cfg.paths.runs}/forced")
    shutil.copytree(interrupted_then_resumed["layout"].model_dir("model_1"), layout.model_dir("model_1"))
    model_dir = Path(layout.model_dir("model_1"))
    before = {p.relative_to(model_dir): p.read_bytes() for p in model_dir.rglob("*") if p.is_file()}

    def lost_workers(*args, **kwargs):
        raise RetryableError("training model_1 failed on the Horovod workers: a rank was lost")
    with monkeypatch.context() as patch:
        patch.setattr(stage, "launch", lost_workers)
        with pytest.raises(RetryableError):
            run_training(spark, cfg, layout, force=True)
    assert {p.relative_to(model_dir): p.read_bytes() for p in model_dir.rglob("*") if p.is_file()} == before
    assert os.listdir(model_dir.parent) == ["model_1"]  # nothing left beside it, the lock released

    forced = run_training(spark, cfg, layout, force=True).details["model_1"]
    final = json.loads((model_dir / "history.json").read_text())
    assert forced["skipped"] is False and final["complete"] and final["resumed_from_epoch"] in (None, 0)
    assert (model_dir / "model.keras").read_bytes() != before[Path("model.keras")]
    assert (model_dir / "curves.png").exists() and (model_dir / "checkpoint").is_dir()
    assert os.listdir(model_dir.parent) == ["model_1"]


@pytest.mark.slow
def test_a_full_disk_under_training_names_the_file_and_the_cause(spark, interrupted_then_resumed, curated_subset,
                                                                    small_disk):
    """Horovod says only that a worker "exited with non-zero status": the worker's own error is the line."""
    from pipeline.failures import environment_failure
    cfg = interrupted_then_resumed["cfg"]
    cfg = dataclasses.replace(cfg, tracking=dataclasses.replace(cfg.tracking, enabled=False))
    disk = small_disk(256)   # room for the run's small files, not for model_1's first checkpoint
    layout = dataclasses.replace(layout_over(cfg, curated_subset), run_root=str(disk / "run"))
    with pytest.raises(Exception) as failed:
        run_training(spark, cfg, layout)
    # What the job prints (pipeline.cli.run_job): a PipelineError's text, or the environment failure it finds.
    line = str(failed.value) if isinstance(failed.value, PipelineError) else str(environment_failure(failed.value))
    assert line.startswith(f"training model_1 failed on the Horovod workers: no space left on device writing "
                           f"{disk}/run/train/model_1/"), line
    assert "\n" not in line and "exited with non-zero status" not in line


@pytest.mark.slow
def test_both_ranks_trained_the_same_weights_on_their_own_shards(interrupted_then_resumed):
    workers = interrupted_then_resumed["final"]["workers"]
    assert [w["rank"] for w in workers] == [0, 1]
    assert all(w["size"] == 2 for w in workers)
    assert workers[0]["pid"] != workers[1]["pid"]
    # Allreduced gradients from broadcast initial weights: the ranks end with identical weights.
    assert workers[0]["trainable_checksum"] == pytest.approx(workers[1]["trainable_checksum"], rel=1e-6)
    assert workers[0]["non_trainable_checksum"] == workers[1]["non_trainable_checksum"] == 0.0  # no batch norm
    # Each rank validated its own shard once: together, every validation row exactly once.
    assert sum(w["validation_rows"] for w in workers) == 10 * VALIDATION_PER_CLASS
    assert all(0 < w["validation_rows"] < 10 * VALIDATION_PER_CLASS for w in workers)
    assert len(interrupted_then_resumed["final"]["peak_rss_mb_per_worker"]) == 2
    assert all(100 < mb < 4000 for mb in interrupted_then_resumed["final"]["peak_rss_mb_per_worker"])


@pytest.mark.slow
def test_history_follows_the_contract(interrupted_then_resumed):
    final = interrupted_then_resumed["final"]
    contract = {"model", "run_id", "epochs_planned", "epochs_completed", "num_workers", "batch_size_per_worker",
                "learning_rate", "params", "layers", "epochs", "total_seconds", "peak_rss_mb_per_worker",
                "resumed_from_epoch", "complete"}
    assert contract <= set(final)
    assert (final["model"], final["run_id"], final["num_workers"], final["tf_threads_per_worker"],
            final["batch_size_per_worker"]) == ("model_1", RUN_ID, 2, 1, 32)
    assert final["params"] == 693_962
    assert final["steps_per_epoch"] == 10 * TRAIN_PER_CLASS // (32 * 2)
    assert [layer["type"] for layer in final["layers"]] == ["Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dense"]
    for epoch in final["epochs"]:
        assert set(epoch) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "validation_rows", "seconds",
                              "learning_rate"}
        assert epoch["seconds"] > 0 and epoch["validation_rows"] == 10 * VALIDATION_PER_CLASS
        assert 0 < epoch["learning_rate"] <= final["learning_rate_scaled"] * 1.000001  # the warm-up climbs to it
    assert final["total_seconds"] >= sum(e["seconds"] for e in final["epochs"])


@pytest.mark.slow
def test_validation_accuracy_is_well_above_chance(interrupted_then_resumed):
    final = interrupted_then_resumed["final"]
    assert final["epochs"][-1]["val_accuracy"] > 0.8
    assert final["epochs"][-1]["loss"] < final["epochs"][0]["loss"]
    assert interrupted_then_resumed["summaries"][1]["model_1"]["val_accuracy"] == final["epochs"][-1]["val_accuracy"]


@pytest.mark.slow
def test_saved_model_reloads_and_predicts(interrupted_then_resumed, curated_subset):
    from tensorflow import keras
    layout = interrupted_then_resumed["layout"]
    assert Path(layout.curves("model_1")).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = keras.models.load_model(layout.model_file("model_1"))
    images, labels = read_idx("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    x = (images[:500] / 255.0).astype(np.float32).reshape(-1, 28, 28, 1)
    probabilities = model.predict(x, batch_size=250, verbose=0)
    assert probabilities.shape == (500, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)
    assert (probabilities.argmax(axis=1) == labels[:500]).mean() > 0.8


def test_unknown_model_is_refused(spark, make_config, curated_subset):
    cfg = make_config()
    with pytest.raises(PipelineError, match="unknown model 'model_9'"):
        run_training(spark, cfg, layout_over(cfg, curated_subset), model="model_9")


def test_missing_curated_data_is_reported(spark, make_config, tmp_path):
    cfg = make_config()
    with pytest.raises(PipelineError, match="not found: run jobs/prepare.py first"):
        run_training(spark, cfg, layout_over(cfg, tmp_path / "nothing-here"))


def test_more_workers_than_task_slots_is_refused(spark, make_config, curated_subset):
    cfg = make_config("train.num_workers=3")
    with pytest.raises(PipelineError, match=r"train.num_workers=3 must be between 1 and the 2 task slots"):
        run_training(spark, cfg, layout_over(cfg, curated_subset))


@pytest.mark.parametrize(("overrides", "expected"), [
    ((), (1, 2)),                                                   # local[2]: one executor, its 2 cores
    (("train.num_workers=2",), (2, 1)),                             # forced ranks share the cores
    (("train.num_workers=1", "train.tf_threads_per_worker=1"), (1, 1))])
def test_default_is_one_rank_per_executor_with_its_cores_as_threads(spark, make_config, overrides, expected):
    from pipeline.train.stage import resolve_ranks
    assert resolve_ranks(make_config(*overrides), spark) == expected


def cluster_session(slots: int, conf: dict[str, str]) -> SimpleNamespace:
    """What resolve_ranks reads from a session on a standalone cluster: its slots and its configuration."""
    return SimpleNamespace(sparkContext=SimpleNamespace(defaultParallelism=slots, getConf=lambda: conf))


@pytest.mark.parametrize(("conf", "expected"), [
    ({"spark.master": "spark://h:7077", "spark.executor.cores": "1"}, (2, 1)),   # conf/cluster-local.yaml
    ({"spark.master": "spark://h:7077", "spark.executor.cores": "2"}, (1, 2)),
    ({"spark.master": "spark://h:7077"}, (2, 1))])                               # sizes unknown: one per slot
def test_on_a_cluster_the_default_is_one_rank_per_executor(make_config, conf, expected):
    from pipeline.train.stage import resolve_ranks
    assert resolve_ranks(make_config(), cluster_session(2, conf)) == expected


def test_fewer_row_groups_than_workers_is_refused(spark, make_config, curated_subset, tmp_path):
    root = tmp_path / "curated"
    curated = curated_layout(root)
    images, labels = read_idx("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
    write_curated(spark, images, labels, np.arange(100), curated.curated("train"), files=4)
    write_curated(spark, images, labels, np.arange(100, 120), curated.curated("validation"), files=1)
    Path(curated.curated_manifest).write_text(json.dumps({"fingerprint": "x",
                                                          "counts": {"train": 100, "validation": 20}}))
    cfg = make_config("train.num_workers=2")
    with pytest.raises(PipelineError, match=r"validation has 1 Parquet row group\(s\), fewer than the 2 Horovod"):
        run_training(spark, cfg, layout_over(cfg, root))


_SHORT_VALIDATION_PASS = """
import horovod.tensorflow.keras as hvd
import tensorflow as tf
from pipeline.train.callbacks import ExactValidation
from pipeline.train.inputs import RowCounter
hvd.init()
counter = RowCounter()
counter.rows = 590
check = ExactValidation(counter, expected_rows=600)
check.set_model(tf.keras.Sequential([tf.keras.Input((1,)), tf.keras.layers.Dense(1)]))
logs = {"val_loss": 0.5}
check.on_epoch_end(2, logs)
print(logs["val_rows"], check.model.stop_training, check.failure, sep="|")
"""


_UNREACHABLE_STORE = """
import logging, sys
import horovod.tensorflow.keras as hvd
from pipeline.train.callbacks import ExactValidation, LiveRun
from pipeline.train.inputs import RowCounter
from pipeline.train.params import TrainParams
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(message)s")
hvd.init()
spec = {"uri": f"sqlite:///{sys.argv[1]}/mlflow.db", "experiment_id": "1", "run_name": "model_1 · r",
        "system_metrics_seconds": 10, "tags": {}}
params = TrainParams(model="model_1", run_id="r", model_path="", history_path="", checkpoint_dir="",
                     tensorboard_dir="", train_url="", validation_url="", train_rows=8, validation_rows=8,
                     num_workers=1, epochs=2, initial_epoch=0, end_epoch=2, batch_size=8, learning_rate=0.001,
                     warmup_epochs=0, seed=3, tf_threads=1, reader_workers=1, reader_queue_size=1, fingerprint="f",
                     shuffle_window_rows=0, tracking=spec)
live = LiveRun(params, ExactValidation(RowCounter(), expected_rows=8))
live.on_train_begin()
live.on_epoch_end(0, {"loss": 0.5, "accuracy": 0.9, "val_loss": 0.4, "val_accuracy": 0.9, "seconds": 1.0})
live.on_train_end()
print("training went on", live.run_id)
"""


def test_a_store_rank_0_cannot_reach_is_one_warning_and_training_goes_on(tmp_path):
    """An executor on another machine than the driver's SQLite store (a folder that is not there): rank 0 must not
    create a store of its own there, nor fail the training; the driver logs the epochs afterwards."""
    import subprocess
    import sys
    missing = tmp_path / "not-on-this-machine"
    out = subprocess.run([sys.executable, "-c", _UNREACHABLE_STORE, str(missing)], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO_ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-1] == "training went on None" and not missing.exists()
    assert [line for line in lines if line.startswith("WARNING")] == [
        f"WARNING MLflow run of model_1: opening failed, live logging stops (the driver logs the epochs after "
        f"training): the local store {missing}/mlflow.db is not on this machine ({os.uname().nodename})"]


def test_a_short_validation_pass_stops_training_and_says_why():
    """A rank that read fewer validation rows than the split holds: the epoch is not recorded, training stops."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", _SHORT_VALIDATION_PASS], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO_ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == \
        "590|True|epoch 3: the ranks' validation passes read 590 rows, the validation split has 600"


def test_a_checkpoint_publish_killed_between_its_moves_is_restored_not_lost(make_config, tmp_path):
    """Rank 0 killed after moving checkpoint/ aside and before moving the new one in: the rerun resumes from the
    previous checkpoint and removes the unpublished copy."""
    from pipeline.train.stage import recover_checkpoint, resume_point
    cfg = make_config()
    layout = Layout.from_config(cfg, RUN_ID)
    checkpoint_dir = Path(layout.checkpoint_dir("model_1"))
    epochs = [{"epoch": 1, "val_accuracy": 0.9}, {"epoch": 2, "val_accuracy": 0.95}]
    for leftover, epoch in (("old-1a2b3c4d", 2), ("tmp-1a2b3c4d", 3)):
        folder = checkpoint_dir.with_name(f"checkpoint.{leftover}")
        folder.mkdir(parents=True)
        (folder / "state.json").write_text(json.dumps({"epoch": epoch, "fingerprint": "f", "epochs": epochs}))
    recover_checkpoint(layout, "model_1")
    assert sorted(p.name for p in checkpoint_dir.parent.iterdir()) == ["checkpoint"]
    assert resume_point(layout, "model_1", "f") == epochs


@pytest.mark.slow
def test_a_stopped_and_resumed_training_is_one_mlflow_run_and_one_version(interrupted_then_resumed):
    """Three invocations on two ranks (stopped, resumed, skipped): rank 0 closes the stopped attempt's run as KILLED
    with its epoch, the resumed one reopens it; one run, one point per epoch, one registered version."""
    assert interrupted_then_resumed["runs_after_stop"] == [("KILLED", 1)]
    from mlflow import MlflowClient

    from pipeline.config import load_config
    from pipeline.tracking.runs import TAG_KIND, TAG_MODEL
    from pipeline.tracking.store import connect
    layout = interrupted_then_resumed["layout"]
    cfg = load_config(None, "full", [f"paths.mlflow={Path(layout.run_root).parent / 'mlflow'}"])
    store = connect(cfg)
    client: MlflowClient = store.client
    runs = client.search_runs([store.experiment_id], f"tags.`{TAG_KIND}` = 'training'")
    assert [(r.data.tags[TAG_MODEL], r.info.status) for r in runs] == [("model_1", "FINISHED")]
    epochs = interrupted_then_resumed["final"]["epochs"]
    steps = [(m.step, m.value) for m in client.get_metric_history(runs[0].info.run_id, "val_accuracy")]
    assert steps == [(e["epoch"], pytest.approx(e["val_accuracy"])) for e in epochs]  # one point per epoch
    versions = client.search_model_versions(f"name = '{cfg.tracking.registered_model}'")
    assert [(str(v.version), v.run_id, v.tags["model"]) for v in versions] == [("1", runs[0].info.run_id, "model_1")]
    summaries = interrupted_then_resumed["summaries"]
    assert summaries[1]["model_1"]["registered_version"] == summaries[2]["model_1"]["registered_version"] == "1"
    assert "registered_version" not in summaries[0]["model_1"]  # stopped after epoch 1: not a trained model yet


@pytest.mark.slow
def test_rank_0_writes_tensorboard_logs(interrupted_then_resumed):
    logs = Path(interrupted_then_resumed["layout"].tensorboard_dir("model_1"))
    events = sorted(p.parent.name for p in logs.rglob("events.out.tfevents.*"))
    assert set(events) == {"train", "validation"} and len(events) == 4  # one file per split per invocation
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    train = EventAccumulator(str(logs / "train"))
    train.Reload()
    epochs = interrupted_then_resumed["final"]["epochs"]
    # Epochs counted from 1, as history.json and MLflow count them; the learning rate beside the curves.
    assert [e.step for e in train.Tensors("epoch_loss")] == [e["epoch"] for e in epochs] == [1, 2]
    assert [e.step for e in train.Tensors("epoch_learning_rate")] == [1, 2]


_WATCH_RUNS = """
import json, os, sqlite3, sys, time
db, stop = sys.argv[1], sys.argv[2]
client, seen = None, []
while not os.path.exists(stop):
    time.sleep(0.1)
    if client is None:  # a client on a store still being created would create it too: wait for the experiment
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
                if not con.execute("select count(*) from experiments where name != 'Default'").fetchone()[0]:
                    continue
        except sqlite3.Error:
            continue
        import mlflow
        client = mlflow.MlflowClient(f"sqlite:///{db}")
        experiment = client.get_experiment_by_name("mnist-spark-pipeline").experiment_id
    for run in client.search_runs([experiment], "tags.`pipeline.kind` = 'training'"):
        seen.append([run.info.status, len(client.get_metric_history(run.info.run_id, "val_accuracy"))])
print(json.dumps(seen))
"""


@pytest.mark.slow
def test_the_model_run_is_live_while_it_trains(spark, curated_subset, tmp_path):
    """Read from another process while rank 0 (a Spark worker process) trains: the model's run is RUNNING with
    epochs already logged; afterwards it is FINISHED, its duration covers the training, every epoch has its own
    time, system metrics were sampled."""
    import subprocess
    import sys

    from pipeline.config import load_config
    cfg = load_config(None, "full", [f"paths.runs={tmp_path / 'runs'}", f"paths.mlflow={tmp_path / 'mlflow'}",
                                     "spark.master=local[2]", "train.models={model_1: {epochs: 5}}",
                                     "train.num_workers=1", "tracking.system_metrics_seconds=1"])
    layout = layout_over(cfg, curated_subset)
    stop = tmp_path / "stop-watching"
    watcher = subprocess.Popen([sys.executable, "-c", _WATCH_RUNS, layout.mlflow_db, str(stop)],
                               stdout=subprocess.PIPE, text=True)
    try:
        run_training(spark, cfg, layout)
    finally:
        stop.touch()
        seen = json.loads(watcher.communicate(timeout=120)[0])
    assert [epochs for status, epochs in seen if status == "RUNNING" and epochs], \
        f"the model's run was never seen RUNNING with an epoch logged: {seen}"
    [run] = _training_runs(cfg)
    history = json.loads(Path(layout.history("model_1")).read_text())
    assert run.info.status == "FINISHED" and run.info.run_name == f"model_1 · {RUN_ID}"
    assert (run.info.end_time - run.info.start_time) / 1000 >= sum(e["seconds"] for e in history["epochs"])
    points = _client(cfg).get_metric_history(run.info.run_id, "val_accuracy")
    assert [p.step for p in points] == [1, 2, 3, 4, 5] == [e["epoch"] for e in history["epochs"]]
    assert len({p.timestamp for p in points}) == 5 and run.info.start_time <= points[0].timestamp
    rates = _client(cfg).get_metric_history(run.info.run_id, "learning_rate")
    assert [p.value for p in rates] == pytest.approx([e["learning_rate"] for e in history["epochs"]])
    assert run.data.tags["mlflow.source.name"] == "jobs/train.py" and run.data.tags["mlflow.user"]
    assert run.data.tags["mlflow.source.git.commit"]
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(run.data.metrics)
