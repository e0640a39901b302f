"""Training stage: each requested model trained data-parallel by Horovod on the Spark executors.

The driver decides per model whether to skip (complete history for the same fingerprint), resume (a checkpoint
for the same fingerprint) or start fresh, launches `train_worker` on `num_workers` Spark tasks with
horovod.spark.run, then finalises history.json (wall time, peak memory per worker) and draws curves.png.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
import time

from pyspark.sql import SparkSession

from pipeline import outputs, storage
from pipeline.config import PipelineConfig
from pipeline.errors import PipelineError, RetryableError
from pipeline.failures import TeeLines, environment_failure, horovod_worker_cause, worker_error
from pipeline.kept_epoch import kept_record
from pipeline.layout import Layout
from pipeline.locks import output_lock
from pipeline.result import StageResult
from pipeline.train import checkpoint, history
from pipeline.train.params import TrainParams, build_params, training_fingerprint

log = logging.getLogger(__name__)


def run_training(spark: SparkSession, cfg: PipelineConfig, layout: Layout, force: bool = False,
                 model: str = "all") -> StageResult:
    """Train `model` (a registered name) or every model in cfg.train.models, in order; skipped when every model
    was already trained. `details` holds each model's summary."""
    names = selected_models(cfg, model)
    manifest = read_curated_manifest(layout)
    num_workers, tf_threads = resolve_ranks(cfg, spark)
    for split in ("train", "validation"):
        check_row_groups(layout.curated(split), num_workers)
    live = live_runs(cfg, layout)
    per_model = {name: train_model(spark, cfg, layout, name, manifest, (num_workers, tf_threads), force, live)
                 for name in names}
    if cfg.tracking.enabled:
        track_models(cfg, layout, per_model)
    return StageResult(all(s["skipped"] for s in per_model.values()),
                       {name: layout.model_dir(name) for name in names},
                       counts={"models": len(names), "workers": num_workers}, details=per_model)


def live_runs(cfg: PipelineConfig, layout: Layout):
    """With tracking on, a function giving the live MLflow run rank 0 opens for (model, training fingerprint):
    plain values for the worker (pipeline.tracking.live). The pipeline's run, which nests them, is made first."""
    if not cfg.tracking.enabled:
        return None
    from pipeline.tracking.live import attempt_spec
    from pipeline.tracking.runs import pipeline_run
    from pipeline.tracking.store import connect, store_errors
    store = connect(cfg)
    with store_errors(store.uri, "opening the pipeline's run"):
        parent = pipeline_run(store, cfg, layout)
    return lambda model, fingerprint: attempt_spec(store, parent, layout.run_id, model, fingerprint,
                                                   cfg.tracking.system_metrics_seconds)


def track_models(cfg: PipelineConfig, layout: Layout, per_model: dict[str, dict]) -> None:
    """Complete every trained model's MLflow run from the driver, once (a skipped model already logged is found
    again): parameters, artifacts, the model and its registered version, which join the model's summary."""
    from pipeline.tracking.runs import log_training
    for name, summary in per_model.items():
        if summary["complete"]:
            entry = log_training(cfg, layout, name)
            summary.update(mlflow_run_id=entry["run_id"], registered_version=entry["version"])


def selected_models(cfg: PipelineConfig, model: str) -> list[str]:
    from pipeline.train.models import MODEL_BUILDERS
    if model == "all":
        names = list(cfg.train.models)
    elif model in cfg.train.models:
        names = [model]
    else:
        raise PipelineError(f"unknown model '{model}' (configured in train.models: {', '.join(cfg.train.models)})")
    unregistered = [n for n in names if n not in MODEL_BUILDERS]
    if unregistered:
        raise PipelineError(f"train.models entry '{unregistered[0]}' has no builder in pipeline/train/models.py "
                            f"(registered: {', '.join(sorted(MODEL_BUILDERS))})")
    return names


def read_curated_manifest(layout: Layout) -> dict:
    manifest = outputs.read_stage_output(layout.curated_manifest, "prepare")
    missing = [s for s in ("train", "validation") if not manifest.get("counts", {}).get(s)]
    if missing:
        raise PipelineError(f"curated data manifest {layout.curated_manifest} has no rows for '{missing[0]}'")
    return manifest


def resolve_ranks(cfg: PipelineConfig, spark: SparkSession) -> tuple[int, int]:
    """(Horovod ranks, TensorFlow threads per rank). By default one rank per executor using its cores: inside one
    executor TensorFlow's own threads share the cores without an allreduce every step, Horovod pays off across
    executors (benchmarks/README.md). Local mode has one executor, the driver: one rank, local[N]'s N threads.
    train.num_workers / train.tf_threads_per_worker set explicitly win; more ranks than slots would wait for ever."""
    slots = spark.sparkContext.defaultParallelism
    ranks = cfg.train.num_workers or max(1, slots // executor_cores(spark, slots))
    if ranks < 1 or ranks > slots:
        raise PipelineError(f"train.num_workers={ranks} must be between 1 and the {slots} task slots Spark has "
                            "(spark.default.parallelism)")
    return ranks, cfg.train.tf_threads_per_worker or max(1, slots // ranks)


def executor_cores(spark: SparkSession, slots: int) -> int:
    """Cores of one executor: all the slots in local mode, spark.executor.cores on a cluster; 1 when a cluster does
    not say (one rank per slot then, one thread each: what scales whatever the executors' sizes)."""
    conf = spark.sparkContext.getConf()
    if conf.get("spark.master", "").startswith("local"):
        return slots
    return max(1, int(conf.get("spark.executor.cores", "1")) // int(conf.get("spark.task.cpus", "1")))


def check_row_groups(path: str, num_workers: int) -> None:
    """Petastorm shards by row group: fewer row groups than workers would leave a rank with no data."""
    outputs.require_stage_output(path, "prepare")
    dataset = storage.parquet_dataset(path)
    groups = sum(fragment.metadata.num_row_groups for fragment in dataset.fragments)
    if groups < num_workers:
        raise PipelineError(f"curated data {path} has {groups} Parquet row group(s), fewer than the {num_workers} "
                            "Horovod workers: rewrite it with smaller data.row_group_rows")


def train_model(spark: SparkSession, cfg: PipelineConfig, layout: Layout, name: str, manifest: dict,
                ranks: tuple[int, int], force: bool, live=None) -> dict:
    """Skip, resume or train one model on `ranks` (Horovod ranks, TF threads each); then finalise its history and
    curves. TF threads are not in the fingerprint: they change the speed, not the weights. `live` (live_runs) gives
    rank 0 its MLflow run."""
    model_dir = layout.model_dir(name)
    with output_lock(model_dir, "train"):  # from the skip decision through finalisation
        fingerprint = training_fingerprint(cfg, name, str(manifest.get("fingerprint")), ranks[0])
        previous = history.read(layout.history(name))
        tracking = live(name, fingerprint) if live else None
        if force:
            params = dataclasses.replace(build_params(cfg, layout, name, manifest["counts"], ranks, 0, fingerprint),
                                         tracking=tracking)
            # Built beside the model it replaces, which stays whole until this one is: a forced run that fails
            # or is killed leaves the previous model (and the next run under this lock clears what it left).
            with outputs.publishing(model_dir) as staging:
                return trained(spark, cfg, name, placed_in(params, model_dir, staging),
                               layout.curves(name).replace(model_dir, staging, 1), [], previous)
        if previous and previous.get("complete") and previous.get("fingerprint") == fingerprint:
            log.info("%s already trained for this config (%s): skipping (use --force to retrain)", name, model_dir)
            return model_summary(previous, skipped=True)
        recover_checkpoint(layout, name)
        epochs_done = resume_point(layout, name, fingerprint)
        params = dataclasses.replace(
            build_params(cfg, layout, name, manifest["counts"], ranks, len(epochs_done), fingerprint),
            tracking=tracking)
        return trained(spark, cfg, name, params, layout.curves(name), epochs_done, previous)


def placed_in(params: TrainParams, model_dir: str, folder: str) -> TrainParams:
    """`params` with every output of the model's folder `model_dir` in `folder` instead."""
    fields = ("model_path", "history_path", "checkpoint_dir", "tensorboard_dir", "best_dir")
    return dataclasses.replace(params, **{f: getattr(params, f).replace(model_dir, folder, 1) for f in fields
                                          if getattr(params, f)})


def trained(spark: SparkSession, cfg: PipelineConfig, name: str, params: TrainParams, curves: str,
            epochs_done: list[dict], previous: dict | None) -> dict:
    """Train `name` from after `epochs_done` into the folders `params` name; finalise its history and `curves`."""
    storage.write_json(params.history_path, history.skeleton(params, describe(name), epochs_done, previous))
    try:
        results, seconds = launch(spark, params, cfg.train.start_timeout)
    except BaseException:
        if params.tracking:
            from pipeline.tracking.live import close_attempt
            close_attempt(params.tracking, "FAILED")
        raise
    best = checkpoint.read_best_state(params.best_dir, params.fingerprint) if params.keep == "best" else None
    final = history.with_kept_epoch(history.finalised(history.read(params.history_path), seconds, results),
                                    best["epoch"] if best else None)
    storage.write_json(params.history_path, final)
    history.plot_curves(final, curves)
    log.info("%s: %d/%d epochs, kept epoch %s (%s), val_accuracy %.4f, %.1f s on %d worker(s)%s", name,
             final["epochs_completed"], final["epochs_planned"], final["kept_epoch"], final["keep"],
             kept_record(final)["val_accuracy"], seconds, params.num_workers,
             "" if final["complete"] else " (stopped early: rerun to resume)")
    return model_summary(final, skipped=False)


def recover_checkpoint(layout: Layout, name: str) -> None:
    """Rank 0 publishes a checkpoint every epoch from its Horovod worker, outside this process's lock, so nothing
    there cleans up after a publish killed midway: do it here, under the lock, before choosing where to resume
    (a kill between the publish's two moves leaves only checkpoint.old-*: it is restored, not lost)."""
    outputs.remove_leftovers(layout.checkpoint_dir(name))


def resume_point(layout: Layout, name: str, fingerprint: str) -> list[dict]:
    """The epoch records of a checkpoint made under the same fingerprint; otherwise start from scratch."""
    model_dir = layout.model_dir(name)
    state = checkpoint.read_state(layout.checkpoint_dir(name))
    if state and state.get("fingerprint") == fingerprint and state.get("epoch", 0) > 0:
        log.info("resuming %s from epoch %d", name, state["epoch"])
        return state["epochs"][:state["epoch"]]
    if storage.exists(model_dir):
        log.info("%s: no checkpoint for this config in %s: training from scratch", name, model_dir)
        storage.remove(model_dir)
    return []


def describe(name: str) -> list[dict]:
    """Layer table of the model, built on the driver (CPU only, nothing trained)."""
    import os
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    from tensorflow import keras

    from pipeline.train.models import build_model, describe_layers
    # Keras numbers layer names per process (conv2d, conv2d_1, ...): start afresh so the report names each
    # model's layers the same way whichever models the driver built before.
    keras.backend.clear_session()
    return describe_layers(build_model(name))


def launch(spark: SparkSession, params: TrainParams, start_timeout: int) -> tuple[list[dict], float]:
    """Run the worker on `params.num_workers` Spark tasks; returns each rank's report (rank order), wall time."""
    from pipeline.services import run_horovod
    from pipeline.train.worker import train_worker
    log.info("training %s: epochs %d..%d of %d on %d worker(s) x %d TF thread(s), %d steps/epoch of %d per worker",
             params.model, params.initial_epoch + 1, params.end_epoch, params.epochs, params.num_workers,
             params.tf_threads, params.steps_per_epoch, params.batch_size)
    started = time.perf_counter()
    # Horovod reports a dead worker as "exited with non-zero status": the cause is in what the worker printed.
    worker_output = TeeLines(sys.stderr)
    try:
        results = run_horovod(spark, train_worker, args=(params.to_dict(),), num_proc=params.num_workers,
                              start_timeout=start_timeout, env={"TF_CPP_MIN_LOG_LEVEL": "2"}, stderr=worker_output)
    except Exception as exc:
        cause = environment_failure(exc) or horovod_worker_cause(worker_output.text) or worker_error(str(exc))
        # Each cause comes redacted (pipeline.failures); paths holding a password are refused by the config.
        raise RetryableError(f"training {params.model} failed on the Horovod workers: {cause} (the epochs "
                             f"completed so far are checkpointed in {params.checkpoint_dir})") from exc
    failure = next((r["failure"] for r in results if r.get("failure")), None)
    if failure:
        raise RetryableError(f"training {params.model} stopped at {failure} (the epochs before it are checkpointed "
                            f"in {params.checkpoint_dir}: rerun to resume)")
    return results, time.perf_counter() - started


def model_summary(hist: dict, skipped: bool) -> dict:
    kept = kept_record(hist)
    return {"val_accuracy": kept.get("val_accuracy"), "epochs": hist.get("epochs_completed", 0),
            "seconds": hist.get("total_seconds"), "params": hist.get("params"), "skipped": skipped,
            "complete": hist.get("complete", False)}
