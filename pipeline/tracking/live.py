"""A model's MLflow run while it trains: opened by rank 0 when training starts, an epoch's metrics logged as the
epoch ends (real timestamps), MLflow's system metrics sampled meanwhile, closed when training ends.

The driver names the run and its tags before the launch (`attempt_spec`: plain values shipped to the worker); rank 0
opens it (`open_attempt`): an unfinished attempt of the same training (pipeline run, model, training fingerprint,
no model logged yet) is reopened, so a training stopped and resumed stays one run with one point per epoch. After
training the driver completes that same run (pipeline.tracking.runs: parameters, artifacts, the model, its version).
Nothing here imports TensorFlow.
"""
from __future__ import annotations

import getpass
import time

TAG_PIPELINE_RUN = "pipeline.run_id"     # the run folder's name
TAG_KIND = "pipeline.kind"               # KIND_PIPELINE or KIND_TRAINING
TAG_MODEL = "pipeline.model"
TAG_MODEL_SHA = "pipeline.model_sha256"  # set once the model is logged: the attempt is complete
TAG_TRAINING_FINGERPRINT = "pipeline.training_fingerprint"
KIND_PIPELINE, KIND_TRAINING = "pipeline", "training"
PARENT_TAG = "mlflow.parentRunId"        # what nests a run under another in MLflow's UI
SOURCE_NAME = "jobs/train.py"
# logs key (as the rank-0 callbacks leave it) -> MLflow metric; step = epoch, counted from 1 as in history.json.
EPOCH_METRICS = {"loss": "loss", "accuracy": "accuracy", "val_loss": "val_loss", "val_accuracy": "val_accuracy",
                 "seconds": "epoch_seconds", "learning_rate": "learning_rate"}


def run_name(model: str, run_id: str) -> str:
    """The model first: MLflow's UI cuts long names, and every model of a pipeline run shares its run id."""
    return f"{model} · {run_id}"


def attempt_spec(store, parent_run_id: str, pipeline_run_id: str, model: str, training_fingerprint: str,
                 system_metrics_seconds: int) -> dict:
    """What rank 0 needs to open the model's run: plain values."""
    from pipeline.manifest import git_commit
    return {"uri": store.uri, "experiment_id": store.experiment_id, "run_name": run_name(model, pipeline_run_id),
            "system_metrics_seconds": system_metrics_seconds,
            "tags": {PARENT_TAG: parent_run_id, TAG_KIND: KIND_TRAINING, TAG_PIPELINE_RUN: pipeline_run_id,
                     TAG_MODEL: model, TAG_TRAINING_FINGERPRINT: training_fingerprint,
                     "mlflow.source.name": SOURCE_NAME, "mlflow.source.type": "JOB",
                     "mlflow.source.git.commit": git_commit(), "mlflow.user": getpass.getuser()}}


def find_attempt(client, experiment_id: str, tags: dict[str, str]):
    """The newest run of this training (same pipeline run, model and training fingerprint) with no model logged
    yet; None if there is none."""
    keys = (TAG_KIND, TAG_PIPELINE_RUN, TAG_MODEL, TAG_TRAINING_FINGERPRINT)
    condition = " and ".join(f"tags.`{key}` = '{tags[key]}'" for key in keys)
    runs = client.search_runs([experiment_id], condition, order_by=["attributes.start_time DESC"])
    return next((run for run in runs if TAG_MODEL_SHA not in run.data.tags), None)


def open_attempt(client, spec: dict) -> str:
    """The run id of the unfinished attempt of this training, else of a new run."""
    found = find_attempt(client, spec["experiment_id"], spec["tags"])
    if found is not None:
        return found.info.run_id
    return client.create_run(spec["experiment_id"], run_name=spec["run_name"], tags=spec["tags"]).info.run_id


def epoch_metrics(epoch: int, values: dict, timestamp_ms: int | None = None) -> list:
    """One epoch's metrics (those of EPOCH_METRICS present in `values`) at step `epoch`."""
    from mlflow.entities import Metric
    now = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
    return [Metric(metric, float(values[key]), now, int(epoch)) for key, metric in EPOCH_METRICS.items()
            if values.get(key) is not None]


def close_attempt(spec: dict, status: str) -> None:
    """Mark this training's run `status` if it is still RUNNING (its rank 0 died, or the launch failed): a run left
    RUNNING would look live in the UI for ever. Best effort: the training's own error is what the caller reports."""
    import mlflow
    try:
        client = mlflow.MlflowClient(spec["uri"])
        found = find_attempt(client, spec["experiment_id"], spec["tags"])
        if found is not None and found.info.status == "RUNNING":
            client.set_terminated(found.info.run_id, status)
    except Exception:  # the store's trouble must not hide the training's
        pass
