"""What the stages log: one MLflow run per pipeline run, one nested run per trained model (opened live by rank 0
while the model trains, pipeline.tracking.live, and completed here from the driver), test metrics added by
evaluation, the report uploaded by the report.

Every call is idempotent: a model's run is found again by its tags (pipeline run id, model, sha256 of its
model.keras), so rerunning a job that skips a complete stage logs nothing twice, and retraining a model (new bytes)
logs a new run and version.
"""
from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os

from pipeline import outputs, storage
from pipeline.config import PipelineConfig
from pipeline.layout import EvaluationFiles, Layout
from pipeline.model_ref import REGISTRY_PREFIX
from pipeline.tracking import record
from pipeline.tracking.live import (  # noqa: F401 (tests and tools read the tags from here)
    KIND_PIPELINE,
    KIND_TRAINING,
    PARENT_TAG,
    SOURCE_NAME,
    TAG_KIND,
    TAG_MODEL,
    TAG_MODEL_SHA,
    TAG_PIPELINE_RUN,
    TAG_TRAINING_FINGERPRINT,
    find_attempt,
    run_name,
)
from pipeline.tracking.live import epoch_metrics as epoch_metric_points
from pipeline.tracking.registry import TRAINING_DATA_TAG
from pipeline.tracking.store import Store, connect, store_errors

log = logging.getLogger(__name__)

TEST_METRICS = ("test_accuracy", "test_loss")
INPUT_EXAMPLE_ROWS = 2


def pipeline_run(store: Store, cfg: PipelineConfig, layout: Layout) -> str:
    """The MLflow run standing for this pipeline run (created on first use), under which every model's run nests."""
    found = _search(store, {TAG_KIND: KIND_PIPELINE, TAG_PIPELINE_RUN: layout.run_id})
    if found:
        return found[0].info.run_id
    from pipeline.manifest import git_commit
    # It spans several jobs: it starts when the pipeline run did (its manifest says when), stays FINISHED rather than
    # RUNNING between jobs, and the report stage moves its end to the report's.
    tags = {TAG_KIND: KIND_PIPELINE, TAG_PIPELINE_RUN: layout.run_id, "pipeline.profile": cfg.profile,
            "pipeline.run_folder": layout.run_root, "mlflow.source.git.commit": git_commit(),
            "mlflow.source.name": "jobs/run_pipeline.py", "mlflow.source.type": "JOB", "mlflow.user": getpass.getuser()}
    run = store.client.create_run(store.experiment_id, run_name=layout.run_id, start_time=_pipeline_started(layout),
                                  tags=tags)
    store.client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def _pipeline_started(layout: Layout) -> int | None:
    """When the run folder's manifest says the pipeline run started (ms), if it says."""
    from datetime import datetime
    manifest = storage.read_json_if_valid(layout.run_manifest)
    try:
        return int(datetime.fromisoformat(manifest["started"]).timestamp() * 1000)
    except (TypeError, KeyError, ValueError):
        return None


def log_training(cfg: PipelineConfig, layout: Layout, model: str, store: Store | None = None) -> dict:
    """The trained `model`'s MLflow run and registered version, logged if not yet: {"run_id", "version", ...}."""
    store = store or connect(cfg)
    with store_errors(store.uri, f"logging the training of {model}"):
        parent = pipeline_run(store, cfg, layout)
        sha = _sha256(layout.model_file(model))
        entry = _logged(store, cfg, layout.run_id, model, sha)
        if entry is None:
            entry = _log_new_training(store, cfg, layout, model, sha, parent)
            log.info("%s logged to MLflow: run %s, registered as %s version %s", model, entry["run_id"],
                     cfg.tracking.registered_model, entry["version"])
        else:
            log.info("%s already logged to MLflow (run %s, version %s)", model, entry["run_id"], entry["version"])
    record.update(layout, "train", tracking_uri=store.shown_uri, experiment_id=store.experiment_id,
                  pipeline_run_id=parent, registered_model=cfg.tracking.registered_model, models={model: entry})
    return entry


def _logged(store: Store, cfg: PipelineConfig, run_id: str, model: str, sha: str) -> dict | None:
    """The finished run already holding these exact model bytes, with its registered version; else None."""
    for run in _search(store, {TAG_KIND: KIND_TRAINING, TAG_PIPELINE_RUN: run_id, TAG_MODEL: model,
                               TAG_MODEL_SHA: sha}):
        if run.info.status != "FINISHED":
            continue  # an attempt killed midway: left as it is (FAILED or RUNNING), never reused
        versions = store.client.search_model_versions(f"name = '{cfg.tracking.registered_model}' and "
                                                      f"run_id = '{run.info.run_id}'")
        if versions:
            return _entry(run.info.run_id, versions[0].version, sha)
    return None


def _entry(run_id: str, version: str, sha: str) -> dict:
    return {"run_id": run_id, "version": str(version), "model_sha256": sha}


def _log_new_training(store: Store, cfg: PipelineConfig, layout: Layout, model: str, sha: str, parent: str) -> dict:
    """Complete the run rank 0 opened for this training (or, if it opened none, one made now): parameters, any epoch
    it did not log, the training data as dataset inputs, artifacts, the model and its registered version."""
    from pipeline.tracking.model_log import log_keras_model
    history = outputs.read_stage_output(layout.history(model), "train")
    curated = _curated_manifest(layout)  # read once: parameters, datasets, version tags and description use it
    tags = {PARENT_TAG: parent, TAG_KIND: KIND_TRAINING, TAG_PIPELINE_RUN: layout.run_id, TAG_MODEL: model,
            TAG_TRAINING_FINGERPRINT: str(history.get("fingerprint"))}
    attempt = find_attempt(store.client, store.experiment_id, tags)
    if attempt is None:  # trained with tracking off, or the run's store was not reachable from rank 0
        attempt = store.client.create_run(store.experiment_id, run_name=run_name(model, layout.run_id), tags={
            **tags, "mlflow.source.name": SOURCE_NAME, "mlflow.source.type": "JOB", "mlflow.user": getpass.getuser()})
    run_id = attempt.info.run_id
    store.client.set_tag(run_id, TAG_MODEL_SHA, sha)
    try:
        store.client.log_batch(run_id, metrics=_missing_epochs(store, run_id, history),
                               params=[_param(k, v) for k, v in training_params(cfg, history, curated).items()])
        _log_datasets(store, run_id, layout, curated)
        for path in (layout.history(model), layout.curves(model)):
            with storage.local_file(path) as local:
                store.client.log_artifact(run_id, local, "training")
        # The data it learnt from, by fingerprint and place: a day it scores is checked for drift against that.
        version_tags = {"run_id": run_id, "model": model, "data_fingerprint": str(curated.get("fingerprint")),
                        TRAINING_DATA_TAG: layout.curated("train"), "model_sha256": sha,
                        "pipeline_run": layout.run_id}
        with storage.local_file(layout.model_file(model)) as local:
            version = log_keras_model(store.client, run_id, local, input_example(layout), cfg, version_tags,
                                      name=model, description=version_description(layout, model, history, curated))
        if store.client.get_run(run_id).info.status != "FINISHED":  # rank 0 closes its run as training ends
            store.client.set_terminated(run_id, "FINISHED")
    except BaseException:
        store.client.set_terminated(run_id, "FAILED")
        raise
    return _entry(run_id, version.version, sha)


def _missing_epochs(store: Store, run_id: str, history: dict) -> list:
    """history.json's epochs the run does not hold yet (all of them when rank 0 did not log them live)."""
    logged = {point.step for point in store.client.get_metric_history(run_id, "val_accuracy")}
    return [point for epoch in history.get("epochs", []) if int(epoch["epoch"]) not in logged
            for point in epoch_metric_points(int(epoch["epoch"]), epoch)]


def _log_datasets(store: Store, run_id: str, layout: Layout, manifest: dict) -> None:
    """The curated train and validation splits as the run's dataset inputs: source = their Parquet folder, digest =
    the curated data's fingerprint, profile = their row counts."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    counts = manifest.get("counts", {})
    store.client.log_inputs(run_id, datasets=[
        DatasetInput(Dataset(name=f"mnist-{split}", digest=str(manifest.get("fingerprint", "unknown")),
                             source_type="local", source=json.dumps({"uri": layout.curated(split)}),
                             profile=json.dumps({"num_rows": counts.get(split)})),
                     [InputTag("mlflow.data.context", context)])
        for split, context in (("train", "training"), ("validation", "validation"))])


def version_description(layout: Layout, model: str, history: dict, manifest: dict) -> str:
    """What a registered version is, for the registry's pages: recipe, data, what it takes and returns."""
    from pipeline.tracking import served_model
    counts = manifest.get("counts", {})
    return (f"{model} from pipeline run {layout.run_id}: {history.get('epochs_completed')} epochs, kept epoch "
            f"{history.get('kept_epoch')} ({history.get('keep')}); batch {history.get('batch_size_per_worker')} per "
            f"worker on {history.get('num_workers')} worker(s), learning rate {history.get('learning_rate')}, "
            f"schedule {history.get('schedule')}, augmentation {history.get('augment')}. Trained on curated MNIST "
            f"{manifest.get('fingerprint')} ({counts.get('train')} train / {counts.get('validation')} validation "
            f"images). Takes {served_model.ACCEPTS}. Returns {served_model.RETURNS}.")


def training_params(cfg: PipelineConfig, history: dict, curated: dict) -> dict:
    """What made the model: config as training used it, data fingerprint, git commit and library versions."""
    from pipeline.manifest import git_commit
    from pipeline.versions import package_versions
    params = {key: history.get(key) for key in (
        "model", "epochs_planned", "epochs_completed", "batch_size_per_worker", "num_workers", "learning_rate",
        "learning_rate_scaled", "warmup_epochs", "steps_per_epoch", "train_rows", "validation_rows", "params",
        "resumed_from_epoch", "keep", "kept_epoch", "augment", "schedule")}
    params |= {"seed": cfg.train.seed, "training_fingerprint": history.get("fingerprint"),
               "data_fingerprint": curated.get("fingerprint"), "git_commit": git_commit(),
               **{f"version.{name}": version for name, version in package_versions().items()}}
    return params


def _param(key: str, value):
    from mlflow.entities import Param
    return Param(key, "" if value is None else str(value)[:6000])


def _curated_manifest(layout: Layout) -> dict:
    """The curated data's manifest (fingerprint, counts), {} when it is missing or unreadable."""
    manifest = storage.read_json_if_valid(layout.curated_manifest)
    return manifest if isinstance(manifest, dict) else {}


def input_example(layout: Layout):
    """A few validation images (never test ones) shaped as the model takes them."""
    import numpy as np

    from pipeline.schema import IMAGE_SHAPE
    dataset = storage.parquet_dataset(layout.curated("validation"))
    images = dataset.fragments[0].head(INPUT_EXAMPLE_ROWS, columns=["image"]).column("image").to_pylist()
    return np.asarray(images, dtype=np.float32).reshape(-1, *IMAGE_SHAPE)


def log_evaluation(cfg: PipelineConfig, layout: Layout, summary: dict, files: EvaluationFiles) -> dict[str, dict]:
    """Test metrics and evaluation figures added to every evaluated model's run (the metrics on its logged model
    too), test accuracy tagged on its version and added to its description, every model's accuracy and the best
    one on the pipeline's run (the training is logged first if it was not). Returns model -> {"run_id",
    "version", ...}."""
    store = connect(cfg)
    name = cfg.tracking.registered_model
    entries = {}
    for model, figures in summary["models"].items():
        entry = log_training(cfg, layout, model, store)
        with store_errors(store.uri, f"logging the evaluation of {model}"):
            version = store.client.get_model_version(name, entry["version"])
            logged = store.client.get_run(entry["run_id"]).data.metrics
            metrics = {k: float(figures[k]) for k in TEST_METRICS if logged.get(k) != float(figures[k])}
            for key, value in metrics.items():
                store.client.log_metric(entry["run_id"], key, value, model_id=logged_model_id(version))
            for path in (files.metrics(model), files.confusion_matrix_csv(model), files.confusion_matrix_png(model),
                         files.misclassified_png(model)):
                with storage.local_file(path) as local:
                    store.client.log_artifact(entry["run_id"], local, "evaluation")
            store.client.set_model_version_tag(name, entry["version"], "test_accuracy",
                                               f"{figures['test_accuracy']:.6f}")
            tested = f" Test accuracy {figures['test_accuracy']:.4f} on {summary.get('test_count')} test images."
            if tested not in (version.description or ""):
                store.client.update_model_version(name, entry["version"], (version.description or "") + tested)
        entries[model] = {**entry, "test_accuracy": figures["test_accuracy"]}
    with store_errors(store.uri, "logging the evaluation summary"):
        parent = pipeline_run(store, cfg, layout)
        logged = store.client.get_run(parent).data.metrics
        summary_metrics = {f"{model}.test_accuracy": float(figures["test_accuracy"])
                           for model, figures in summary["models"].items()}
        summary_metrics["best_test_accuracy"] = float(summary["best_test_accuracy"])
        for key, value in summary_metrics.items():
            if logged.get(key) != value:
                store.client.log_metric(parent, key, value)
        store.client.set_tag(parent, "pipeline.best_model", summary["best_model"])
    record.update(layout, "evaluate", models=entries)
    return entries


def logged_model_id(version) -> str | None:
    """The logged model a registered version was made from (MLflow 3 names it in the version's source,
    models:/<model id>, and leaves ModelVersion.model_id empty on a SQL store)."""
    if version.model_id:
        return version.model_id
    source = version.source or ""
    return source.removeprefix(REGISTRY_PREFIX) if source.startswith(f"{REGISTRY_PREFIX}m-") else None


def log_report(cfg: PipelineConfig, layout: Layout) -> str:
    """report.html uploaded to the pipeline run's artifacts, with the run's summary: data counts and fingerprint
    (parameters), each stage's seconds so far (metrics). Returns that run's id."""
    store = connect(cfg)
    with store_errors(store.uri, "uploading the report"):
        parent = pipeline_run(store, cfg, layout)
        with storage.local_file(layout.report_html) as local:
            store.client.log_artifact(parent, local)
        curated = _curated_manifest(layout)
        given = store.client.get_run(parent).data.params
        params = {f"{split}_images": count for split, count in (curated.get("counts") or {}).items()}
        params["data_fingerprint"] = curated.get("fingerprint")
        params = {k: v for k, v in params.items() if k not in given}  # a parameter is written once
        manifest = storage.read_json_if_valid(layout.run_manifest) or {}
        metrics = {f"stage_seconds.{entry['stage']}": float(entry["seconds"]) for entry in manifest.get("stages", [])
                   if entry.get("seconds") is not None}
        store.client.log_batch(parent, params=[_param(k, v) for k, v in params.items()],
                               metrics=_metrics_now(metrics))
        store.client.set_terminated(parent, "FINISHED")  # now: its duration runs to the report
    record.update(layout, "report", pipeline_run_id=parent, report_artifact=os.path.basename(layout.report_html))
    return parent


def _metrics_now(values: dict[str, float]) -> list:
    import time

    from mlflow.entities import Metric
    now = int(time.time() * 1000)
    return [Metric(key, value, now, 0) for key, value in values.items()]


def log_retraining(cfg: PipelineConfig, decision: dict) -> str:
    """A retraining's decision (both models on the test set and on the newest labelled batches, promoted or kept)
    logged to its pipeline run: metrics, a tag and decision.json. Returns that run's id."""
    store = connect(cfg)
    with store_errors(store.uri, "logging the retraining decision"):
        found = _search(store, {TAG_KIND: KIND_PIPELINE, TAG_PIPELINE_RUN: decision["run_id"]})
        if not found:  # nothing was trained (no labelled batch): the decision still gets a run of its own
            found = [store.client.create_run(store.experiment_id, run_name=decision["run_id"], tags={
                TAG_KIND: KIND_PIPELINE, TAG_PIPELINE_RUN: decision["run_id"]})]
        run_id = found[0].info.run_id
        logged = store.client.get_run(run_id).data.metrics
        for side in ("challenger", "champion"):
            for figure in ("test_accuracy", "newest_batches_accuracy"):
                value = (decision.get(side) or {}).get(figure)
                if value is not None and logged.get(f"{side}_{figure}") != float(value):
                    store.client.log_metric(run_id, f"{side}_{figure}", float(value))
        store.client.set_tag(run_id, "pipeline.retraining.promoted", str(bool(decision["promoted"])).lower())
        store.client.log_dict(run_id, decision, "retraining/decision.json")
    return run_id


def _search(store: Store, tags: dict[str, str]) -> list:
    condition = " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
    return store.client.search_runs([store.experiment_id], condition, order_by=["attributes.start_time DESC"])


def _sha256(path: str) -> str:
    return hashlib.sha256(storage.read_bytes(path)).hexdigest()
