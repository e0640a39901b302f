"""One measurement per function, each run by `run.py` in a fresh process (`python -m benchmarks.tasks NAME
ARGS_JSON OUT_JSON`): TensorFlow, Horovod and the Spark JVM start clean every time, and the driver memory
sampled is that of one stage alone. Stage sides call the stages' public functions; baseline sides call
benchmarks.baselines.
"""
from __future__ import annotations

import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

from benchmarks import baselines
from benchmarks.generate_idx import FILES
from benchmarks.measure import bytes_under, measured

log = logging.getLogger("benchmarks")
REPO = Path(__file__).resolve().parent.parent


# ---- config and session: one bench root holding data and runs ----

def bench_config(root: str, profile: str, input_dir: str | None = None, overrides: tuple[str, ...] = ()):
    """conf/local.yaml with the profile, outputs under `root`, Spark on local[2]; generated (plain) IDX names
    when `input_dir` is a generated set."""
    from pipeline.config import load_config
    sets = [f"paths.data={root}/data", f"paths.runs={root}/runs",
            "spark.master=local[2]", "spark.log_level=ERROR",
            'spark.settings={"spark.ui.showConsoleProgress": "false"}']
    if input_dir is not None:
        sets.append(f"paths.input={input_dir}")
        if (Path(input_dir) / FILES["train"][0]).exists():
            # A generated set: plain IDX names, and MNIST's 10% validation share at any N.
            sets += ["data.format=idx", "prepare.validation_size=0.1", f"data.train_images={FILES['train'][0]}",
                     f"data.train_labels={FILES['train'][1]}", f"data.test_images={FILES['test'][0]}",
                     f"data.test_labels={FILES['test'][1]}"]
    return load_config(REPO / "conf" / "local.yaml", profile, [*sets, *overrides])


def _session(cfg, name: str):
    from pipeline.spark import build_spark_session
    return build_spark_session(cfg.spark, f"bench-{name}")


def _layout(cfg, run_id: str | None = None):
    from pipeline.layout import Layout
    return Layout.from_config(cfg, run_id)


def _ensure_curated(spark, cfg, layout) -> None:
    """The curated data the benchmark reads; the stages skip when it is already complete."""
    from pipeline.data.ingest import run_ingest
    from pipeline.data.prepare import run_prepare
    run_ingest(spark, cfg, layout)
    run_prepare(spark, cfg, layout)


# ---- 3 and 5: ingest + prepare, bytes, driver memory ----

def data_stages(root: str, profile: str, input_dir: str, repeats: int) -> dict:
    """run_ingest then run_prepare (force) `repeats` times over the IDX files in `input_dir`."""
    from pipeline.data.ingest import run_ingest
    from pipeline.data.prepare import run_prepare
    cfg = bench_config(root, profile, input_dir)
    layout, spark = _layout(cfg), _session(cfg, "data")
    runs = []
    try:
        for _ in range(repeats):
            ingest, prepare = {}, {}
            with measured(ingest):
                ingest["summary"] = run_ingest(spark, cfg, layout, force=True).to_dict()
            with measured(prepare):
                prepare["summary"] = run_prepare(spark, cfg, layout, force=True).to_dict()
            runs.append({"ingest": ingest, "prepare": prepare,
                         "seconds": round(ingest["seconds"] + prepare["seconds"], 3)})
    finally:
        spark.stop()
    curated = {split: bytes_under(layout.curated(split)) for split in ("train", "validation", "test")}
    return {"runs": runs, "median_seconds": statistics.median(r["seconds"] for r in runs),
            "bytes": {"input": bytes_under(input_dir), "raw": bytes_under(layout.raw),
                      "curated": sum(curated.values()), "curated_by_split": curated},
            "curated_root": layout.curated_root, "curated_test": layout.curated("test")}


def baseline_convert(root: str, input_dir: str, repeats: int, row_group_rows: int,
                     validation_fraction: float = 0.1) -> dict:
    """The single-process NumPy + PyArrow conversion of the same files, `repeats` times."""
    import shutil
    out = Path(root) / "baseline-convert" / Path(input_dir).name
    runs = []
    for _ in range(repeats):
        shutil.rmtree(out, ignore_errors=True)
        record: dict = {}
        with measured(record):
            record["counts"] = baselines.convert_numpy_pyarrow(input_dir, out, row_group_rows, validation_fraction)
        runs.append(record)
    return {"runs": runs, "median_seconds": statistics.median(r["seconds"] for r in runs),
            "bytes": {"raw": bytes_under(out / "raw"),
                      "curated": sum(bytes_under(out / s) for s in ("train", "validation", "test"))}}


# ---- 1: training ----

def train_pipeline(root: str, profile: str, model: str, workers: int, epochs: int, tf_threads: int,
                   run_id: str) -> dict:
    """run_training for one model on `workers` Horovod workers x `tf_threads` (0, 0: the default config, resolved
    from Spark by the stage and recorded in history.json); seconds per epoch from its history.json and
    test accuracy of its model.keras, computed the same way as the baseline's."""
    from pipeline import storage
    from pipeline.train.stage import run_training
    cfg = bench_config(root, profile, overrides=(f"train.num_workers={workers}", f"train.models.{model}.epochs="
                                                 f"{epochs}", f"train.tf_threads_per_worker={tf_threads}"))
    layout, spark = _layout(cfg, run_id), _session(cfg, "train")
    record: dict = {}
    try:
        _ensure_curated(spark, cfg, layout)
        with measured(record):
            record["summary"] = run_training(spark, cfg, layout, force=True, model=model).to_dict()
    finally:
        spark.stop()
    history = storage.read_json(layout.history(model))
    test = baselines.load_curated(layout.curated("test"))
    epoch_seconds = [e["seconds"] for e in history["epochs"]]
    return {**record, "epoch_seconds": epoch_seconds, "total_seconds": history.get("total_seconds"),
            "train_rows": _count(layout, "train"), "batch_size_per_worker": history["batch_size_per_worker"],
            "num_workers": history["num_workers"], "tf_threads_per_worker": history["tf_threads_per_worker"],
            "val_accuracy": [e["val_accuracy"] for e in history["epochs"]],
            "peak_rss_mb_per_worker": history.get("peak_rss_mb_per_worker"),
            "model_path": layout.model_file(model), **baselines.evaluate_saved(layout.model_file(model), test)}


def train_recipe(root: str, profile: str, model: str, run_id: str, overrides: list[str]) -> dict:
    """run_training for one model under `overrides` (seed, recipe options), then its saved model scored on the
    curated test set: one run of benchmarks/model4.py's seeds and ablation."""
    from pipeline import storage
    from pipeline.kept_epoch import kept_record
    from pipeline.train.stage import run_training
    cfg = bench_config(root, profile, overrides=tuple(overrides))
    layout, spark = _layout(cfg, run_id), _session(cfg, "recipe")
    record: dict = {}
    try:
        _ensure_curated(spark, cfg, layout)
        with measured(record):
            run_training(spark, cfg, layout, force=True, model=model)
    finally:
        spark.stop()
    history = storage.read_json(layout.history(model))
    kept = kept_record(history)
    test = baselines.load_curated(layout.curated("test"))
    return {"seconds": record["seconds"], "training_seconds": history["total_seconds"],
            "epoch_seconds": [e["seconds"] for e in history["epochs"]], "epochs": history["epochs_completed"],
            "num_workers": history["num_workers"], "batch_size_per_worker": history["batch_size_per_worker"],
            "keep": history["keep"], "augment": history["augment"], "schedule": history["schedule"],
            "kept_epoch": history["kept_epoch"], "kept_val_accuracy": kept["val_accuracy"],
            "last_val_accuracy": history["epochs"][-1]["val_accuracy"],
            "model_path": layout.model_file(model), **baselines.evaluate_saved(layout.model_file(model), test)}


def train_recipe_numpy(root: str, profile: str, model: str, seed: int) -> dict:
    """The same recipe as train_recipe (epochs, batch, learning rate, augmentation, schedule, kept epoch) fitted
    in one process as benchmarks/notebook.py fits it, on the same curated splits loaded into NumPy, then scored
    on the test split: the other side of the parity benchmark."""
    from benchmarks.notebook import fit
    cfg = bench_config(root, profile)
    layout = _layout(cfg)
    splits = {s: baselines.load_curated(layout.curated(s)) for s in ("train", "validation", "test")}
    recipe, record = cfg.train.models[model], {}
    with measured(record):
        trained = fit(model, recipe, splits["train"], splits["validation"], cfg.train.batch_size,
                      cfg.train.learning_rate, seed)
    test_loss, test_accuracy = trained.evaluate(splits["test"][0], baselines.one_hot(splits["test"][1]),
                                                batch_size=1024, verbose=0)
    return {"seconds": record["seconds"], "seed": seed, "epochs": recipe.epochs, "keep": recipe.keep,
            "augment": recipe.augment, "schedule": recipe.schedule, "test_accuracy": float(test_accuracy),
            "test_loss": float(test_loss), "train_rows": len(splits["train"][1])}


def train_numpy(root: str, profile: str, model: str, epochs: int) -> dict:
    """The single-process model.fit on the same curated splits, loaded whole into NumPy first (not timed)."""
    layout = _layout(bench_config(root, profile))
    splits = {s: baselines.load_curated(layout.curated(s)) for s in ("train", "validation", "test")}
    record: dict = {}
    with measured(record):
        record.update(baselines.fit_numpy(model, splits["train"], splits["validation"], splits["test"], epochs))
    return record


def _count(layout, split: str) -> int:
    from pipeline import storage
    return int(storage.read_json(layout.curated_manifest)["counts"][split])


# ---- 2: input pipeline ----

def reader_throughput(root: str, profile: str, samples: int, repeats: int) -> dict:
    """Samples/s of one Petastorm reader exactly as a training worker opens it (rank 0 of the configured
    workers, the train config's pool, queue and TF threads): raw row groups, and through the tf.data pipeline
    Keras consumes (row groups cut into batches and one-hot encoded in TensorFlow)."""
    import tensorflow as tf

    from pipeline.train.inputs import open_shard, training_dataset
    from pipeline.train.params import build_params
    cfg = bench_config(root, profile, overrides=("train.num_workers=2",))
    layout = _layout(cfg)
    threads = cfg.train.tf_threads_per_worker or 1   # 2 workers on the 2 cores: one thread each
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    counts = {s: _count(layout, s) for s in ("train", "validation")}
    params = build_params(cfg, layout, "model_3", counts, (2, threads), 0, "bench")
    stages = {"row_groups": lambda reader: _rows_of(iter(reader)),
              "tf_data": lambda reader: iter(training_dataset(reader, params.batch_size, params.shuffle_window_rows,
                                                              params.seed))}
    result = {"reader_config": {"workers_count": params.reader_workers, "results_queue_size":
                                params.reader_queue_size, "shard": "0 of 2", "batch_size": params.batch_size,
                                "tf_threads": threads}}
    for name, make in stages.items():
        runs = []
        for _ in range(repeats):
            with open_shard(params.train_url, params, rank=0, size=2, repeat=True) as reader:
                runs.append(baselines._drain(make(reader), params.batch_size, samples))
        result[name] = {"runs": runs, "samples_per_second": statistics.median(r["samples_per_second"]
                                                                               for r in runs)}
    return result


def _rows_of(row_groups):
    """Row groups re-counted as batches of rows so `_drain` measures them with the same yardstick."""
    for group in row_groups:
        for _ in range(len(group.label) // 32):
            yield None


def tfdata_numpy(root: str, profile: str, samples: int, repeats: int) -> dict:
    layout = _layout(bench_config(root, profile))
    x, y = baselines.load_curated(layout.curated("train"))
    runs = [baselines.tfdata_throughput(x, y, 32, samples) for _ in range(repeats)]
    return {"runs": runs, "samples_per_second": statistics.median(r["samples_per_second"] for r in runs)}


# ---- 4: batch prediction ----

def predict_stage(root: str, profile: str, model_path: str, input_path: str | None, repeats: int,
                  run_id: str) -> dict:
    """run_prediction over `input_path` (None: the curated test set), `repeats` times into fresh folders."""
    import shutil

    from pipeline.predict.stage import run_prediction
    cfg = bench_config(root, profile)
    layout, spark = _layout(cfg, run_id), _session(cfg, "predict")
    runs = []
    try:
        if input_path is None:
            _ensure_curated(spark, cfg, layout)  # the test set; skipped when a data run made it
        for i in range(repeats):
            out = f"{root}/predictions/{run_id}-{i}"
            shutil.rmtree(out, ignore_errors=True)
            record: dict = {}
            with measured(record):
                summary = run_prediction(spark, cfg, layout, input_path=input_path, model=model_path,
                                         output=out).details
            record.update(images=summary["count"], images_per_second=summary["count"] / record["seconds"],
                          accuracy=summary.get("accuracy"))
            runs.append(record)
    finally:
        spark.stop()
    return {"runs": runs, "images": runs[0]["images"],
            "images_per_second": statistics.median(r["images_per_second"] for r in runs)}


def predict_parquet_numpy(root: str, profile: str, model_path: str, parquet_path: str | None, repeats: int,
                          batch_size: int) -> dict:
    """In one process: read the same Parquet, model.predict, write the predictions (model loaded once, apart)."""
    layout = _layout(bench_config(root, profile))
    model = baselines.load_model(model_path)
    out = Path(root) / "baseline-predict"
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for i in range(repeats):
        record: dict = {}
        with measured(record):
            record.update(baselines.predict_parquet(model, parquet_path or layout.curated("test"),
                                                    out / f"parquet-{i}.parquet", batch_size))
        record["images_per_second"] = record["images"] / record["seconds"]
        runs.append(record)
    return {"runs": runs, "images": runs[0]["images"], "accuracy": runs[0]["accuracy"],
            "images_per_second": statistics.median(r["images_per_second"] for r in runs)}


# ---- 4b: a folder of PNG files, as `jobs/predict.py --input <folder>` scores it ----

def predict_folder_job(root: str, profile: str, model_path: str, folder: str, run_id: str) -> dict:
    """`python jobs/predict.py --input <folder>` as a user starts it: seconds from the command to its exit (the
    JVM, imports and model check included); accuracy from labels.csv beside the files."""
    import subprocess

    from benchmarks.generate_images import read_labels
    out = Path(root) / "predictions" / f"{run_id}-folder"
    sets = [f"paths.data={root}/data", f"paths.runs={root}/runs", "spark.master=local[2]",
            "spark.log_level=ERROR", "predict.print_rows=0"]
    command = [sys.executable, str(REPO / "jobs" / "predict.py"), "--profile", profile, "--run-id", run_id,
               "--input", folder, "--model", model_path, "--output", str(out),
               *(arg for s in sets for arg in ("--set", s))]
    record: dict = {}
    with measured(record):
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"jobs/predict.py failed: {done.stderr.strip().splitlines()[-1:]}")
    predicted = _digits_by_file(str(Path(out) / "predictions.parquet"), "path")
    return {**record, "images": len(predicted), "images_per_second": len(predicted) / record["seconds"],
            "accuracy": _accuracy(predicted, read_labels(Path(folder))), "log_tail": done.stderr[-2000:]}


def predict_folder_pil(root: str, model_path: str, folder: str, batch_size: int) -> dict:
    """In one process, timed from the first import: PIL opens each file, to_mnist, model.predict, Parquet out."""

    from benchmarks.generate_images import read_labels
    out = Path(root) / "baseline-predict"
    out.mkdir(parents=True, exist_ok=True)
    record: dict = {}
    with measured(record):
        record.update(baselines.predict_image_files(baselines.load_model(model_path), folder,
                                                    out / "folder.parquet", batch_size))
    predicted = _digits_by_file(str(out / "folder.parquet"), "id")
    return {**record, "images_per_second": record["images"] / record["seconds"],
            "accuracy": _accuracy(predicted, read_labels(Path(folder)))}


def _digits_by_file(parquet: str, path_column: str) -> dict[str, int]:
    """{file name: predicted digit} of a predictions Parquet whose `path_column` holds each file's path."""
    import pyarrow.parquet as pq
    table = pq.read_table(parquet, columns=[path_column, "prediction"])
    return dict(zip((p.rsplit("/", 1)[-1] for p in table.column(path_column).to_pylist()),
                    table.column("prediction").to_pylist(), strict=True))


def _accuracy(predicted: dict[str, int], labels: dict[str, int]) -> float | None:
    return sum(labels[name] == p for name, p in predicted.items()) / len(predicted) if predicted else None


# ---- 4c: a small landed day, as the daily DAG's scoring task runs it ----

def daily_config_sets(root: str) -> list[str]:
    """--set values of the daily benchmark: its landing and batch folders under `root`, Spark on local[2]."""
    return [f"paths.data={root}/data", f"paths.runs={root}/runs", f"paths.landing={root}/daily/landing",
            f"paths.batches={root}/daily/batches", f"paths.mlflow={root}/daily/mlflow", "spark.master=local[2]",
            "spark.log_level=ERROR"]


SEED_UNTRAINED = 0


def scoring_model(root: str, model_path: str | None, model: str = "model_1") -> dict:
    """The model a scoring benchmark (prediction, daily) scores with: the training benchmark's, else `model` with
    its initial weights (the same network, so the same work per image; its predictions mean nothing, and both sides
    of a comparison use it)."""
    if model_path:
        return {"model_path": model_path, "trained": True}
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    from pipeline.train.models import build_model
    path = Path(root) / "untrained" / f"{model}-initial.keras"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        import tensorflow as tf
        tf.keras.utils.set_random_seed(SEED_UNTRAINED)
        build_model(model).save(str(path))
    return {"model_path": str(path), "trained": False}


def daily_job(root: str, profile: str, ds: str, count: int, model_path: str, repeats: int) -> dict:
    """`python jobs/score_batch.py --ds <day> --model <file>` on a landed day of `count` scans, `repeats` times,
    each timed from the command to its exit (JVM, imports, model check, checks, scoring, publishing). The first run
    of a model version pays the safe-mode probe (a TensorFlow import), which later days skip: the median is of the
    later runs."""
    import subprocess
    import tempfile

    from pipeline.batch.arrivals import simulate_day
    from pipeline.config import load_config
    from pipeline.layout import Layout
    from pipeline.model_files import CHECKED_MODELS_ENV
    sets = daily_config_sets(root)
    cfg = load_config(REPO / "conf" / "local.yaml", profile, sets)
    files = Layout.from_config(cfg).batch_files(ds)
    simulate_day(cfg, files, count)   # replaces the day: the same bytes for the same date and count
    env = {**os.environ, CHECKED_MODELS_ENV: tempfile.mkdtemp(prefix="bench-checked-models-")}
    command = [sys.executable, str(REPO / "jobs" / "score_batch.py"), "--profile", profile, "--ds", ds,
               "--model", model_path, *(arg for s in sets for arg in ("--set", s))]
    runs = []
    for _ in range(repeats):
        record: dict = {}
        with measured(record):
            done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"jobs/score_batch.py failed: {done.stderr.strip().splitlines()[-1:]}")
        runs.append(record)
    later = [r["seconds"] for r in runs[1:]] or [runs[0]["seconds"]]
    return {"runs": runs, "images": len(_digits_by_file(files.predictions, "source_file")),
            "first_seconds": runs[0]["seconds"], "seconds": statistics.median(later), "landing": files.landing,
            "predictions": files.predictions, "log_tail": done.stderr[-2000:]}


def daily_single(root: str, landing: str, model_path: str, repeats: int, job_predictions: str) -> dict:
    """The same day in one fresh Python process (baselines.predict_image_files over its PNG and JPEG files),
    `repeats` times, each timed from the command to its exit like the job; and how many files it gave the digit the
    job gave."""
    import subprocess
    out = Path(root) / "daily" / f"single-{Path(landing).name}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    script = ("import sys; from benchmarks.baselines import load_model, predict_image_files; "
              "predict_image_files(load_model(sys.argv[1]), sys.argv[2], sys.argv[3], 1024, (\".png\", \".jpg\"))")
    runs = []
    for _ in range(repeats):
        record: dict = {}
        with measured(record):
            subprocess.run([sys.executable, "-c", script, model_path, landing, str(out)], cwd=REPO, check=True,
                           capture_output=True)
        runs.append(record)
    ours, theirs = _digits_by_file(str(out), "id"), _digits_by_file(job_predictions, "source_file")
    return {"runs": runs, "images": len(ours), "seconds": statistics.median(r["seconds"] for r in runs),
            "job_images": len(theirs), "same_digit_as_job": sum(theirs.get(name) == d for name, d in ours.items())}


# ---- 5: end to end ----

def end_to_end(root: str, profile: str, side: str) -> dict:
    """The wall time of one whole fresh process: `make run`'s command with empty output folders under `root`
    (side "pipeline"), or the same steps as one notebook process, benchmarks/notebook.py (side "notebook")."""
    import resource
    import shutil
    import subprocess
    out = Path(root) / "end_to_end" / side
    shutil.rmtree(out, ignore_errors=True)   # nothing to skip: every stage runs, as on a fresh clone
    sets = [f"paths.{key}={out}/{key}" for key in ("data", "runs", "mlflow")]
    if side == "pipeline":
        command = [sys.executable, str(REPO / "jobs" / "run_pipeline.py"), "--conf", str(REPO / "conf" / "local.yaml"),
                   "--profile", profile, "--run-id", E2E_RUN_ID, *[arg for s in sets for arg in ("--set", s)]]
    else:
        command = [sys.executable, str(REPO / "benchmarks" / "notebook.py"), "--profile", profile, "--out", str(out)]
    record: dict = {"command": command}
    started = time.perf_counter()
    with open(Path(root) / "logs" / f"end-to-end-{side}.out", "w") as sink:
        completed = subprocess.run(command, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT)
    record["seconds"] = round(time.perf_counter() - started, 1)
    if completed.returncode != 0:
        raise RuntimeError(f"{side} exited {completed.returncode}: see {sink.name}")
    record["peak_child_rss_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    record["test_accuracy"] = (_pipeline_accuracies(profile, sets) if side == "pipeline"
                               else json.loads(Path(sink.name).read_text().strip().splitlines()[-1])["test_accuracy"])
    return record


E2E_RUN_ID = "end-to-end"


def _pipeline_accuracies(profile: str, sets: list[str]) -> dict[str, float]:
    from pipeline import storage
    from pipeline.config import load_config
    cfg = load_config(REPO / "conf" / "local.yaml", profile, sets)
    files = _layout(cfg, E2E_RUN_ID).evaluation_files
    return {name: storage.read_json(files.metrics(name))["test_accuracy"] for name in cfg.train.models}


TASKS = {f.__name__: f for f in (data_stages, baseline_convert, train_pipeline, train_recipe, train_recipe_numpy,
                                 train_numpy, reader_throughput, tfdata_numpy, predict_stage, predict_parquet_numpy,
                                 predict_folder_job, predict_folder_pil, scoring_model, daily_job,
                                 daily_single, end_to_end)}


def _main(argv: list[str]) -> int:
    name, args_json, out_json = argv
    from pipeline.cli import configure_logging
    configure_logging()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    started = time.perf_counter()
    result = TASKS[name](**json.loads(args_json))
    result["task_wall_seconds"] = round(time.perf_counter() - started, 3)
    Path(out_json).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
