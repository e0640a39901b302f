"""Shared fixtures: one local Spark session for the whole test run, and configs pointing at temp dirs."""
from __future__ import annotations

import os

import pytest

from pipeline.config import PipelineConfig, load_config
from pipeline.spark import build_spark_session

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests use MLflow stores under their own temp dirs (paths.mlflow), never one named by the environment.
for _mlflow_env in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
    os.environ.pop(_mlflow_env, None)


@pytest.fixture(scope="session", autouse=True)
def checked_models(tmp_path_factory):
    """Models that passed the safe-mode load are remembered in a folder of the test run's own (inherited by every
    job and service the tests start), never in the user's cache: each run proves its checks from scratch."""
    from pipeline.model_files import CHECKED_MODELS_ENV
    folder = tmp_path_factory.mktemp("checked-models")
    os.environ[CHECKED_MODELS_ENV] = str(folder)
    return folder


def pytest_collection_modifyitems(items):
    """A test that asks for the Spark session is marked `spark`, however it reaches it."""
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.spark)


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from pipeline.config import SparkConfig
    local_dir = tmp_path_factory.mktemp("spark-local")
    cfg = SparkConfig(master="local[2]", app_name="tests", log_level="ERROR", shuffle_partitions=4,
                      driver_memory="2g", settings={"spark.local.dir": str(local_dir),
                                                    "spark.sql.warehouse.dir": str(local_dir / "warehouse"),
                                                    "spark.default.parallelism": "2"})
    session = build_spark_session(cfg, "tests")
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture(scope="session")
def dist():
    """`make dist` run once: dist/pipeline.zip (returned) and dist/conf.zip beside it, as a cluster gets them."""
    import subprocess

    from pipeline.config import REPO_ROOT
    subprocess.run(["make", "-s", "dist"], cwd=REPO_ROOT, check=True, capture_output=True, timeout=120)
    return REPO_ROOT / "dist" / "pipeline.zip"


@pytest.fixture
def make_config(tmp_path):
    """A config whose outputs go under this test's tmp_path; extra `section.key=value` overrides allowed."""
    def _make(*overrides: str, profile: str = "full", input_dir: str | None = None) -> PipelineConfig:
        base = [f"paths.data={tmp_path / 'data'}", f"paths.runs={tmp_path / 'runs'}",
                f"paths.mlflow={tmp_path / 'mlflow'}", f"paths.landing={tmp_path / 'landing'}",
                f"paths.batches={tmp_path / 'batches'}", "spark.master=local[2]"]
        if input_dir is not None:
            base.append(f"paths.input={input_dir}")
        return load_config(None, profile, [*base, *overrides])
    return _make


# A small real model for the evaluation and prediction tests. TensorFlow runs in a subprocess so that the
# pytest process never imports it: the trained model, an untrained one, the first 1,000 test images and the
# model's own `predict` on them come back as files.
_TRAIN_SMALL_MODEL = """
import os, sys
import numpy as np
import tensorflow as tf
from pipeline.formats.idx import read_array
from pipeline.train.models import build_model

data, out = sys.argv[1], sys.argv[2]
def idx(name):
    return read_array(os.path.join(data, name))
x_train = idx("train-images-idx3-ubyte.gz").reshape(-1, 28, 28, 1)[:4000].astype("float32") / 255
y_train = idx("train-labels-idx1-ubyte.gz")[:4000]
x_test = idx("t10k-images-idx3-ubyte.gz").reshape(-1, 28, 28, 1)[:1000].astype("float32") / 255
y_test = idx("t10k-labels-idx1-ubyte.gz")[:1000]
tf.keras.utils.set_random_seed(1)
model = build_model("model_1")
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x_train, y_train, batch_size=64, epochs=2, verbose=0)
model.save(os.path.join(out, "trained.keras"))
build_model("model_1").save(os.path.join(out, "untrained.keras"))
np.savez(os.path.join(out, "reference.npz"), images=x_test.reshape(-1, 784), labels=y_test.astype("int32"),
         probabilities=model.predict(x_test, verbose=0))
"""


@pytest.fixture(scope="session")
def small_mnist_model(tmp_path_factory):
    """{'trained', 'untrained': .keras paths; 'images' (1000x784 float32), 'labels', 'probabilities' (trained
    model's own predict)}: model_1 fitted for 2 epochs on 4,000 bundled training images (about 90% accurate)."""
    import subprocess
    import sys

    import numpy as np

    from pipeline.config import REPO_ROOT
    out = tmp_path_factory.mktemp("small-model")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run([sys.executable, "-c", _TRAIN_SMALL_MODEL, str(REPO_ROOT / "data" / "mnist"), str(out)],
                   check=True, env=env, timeout=300)
    reference = np.load(out / "reference.npz")
    return {"trained": str(out / "trained.keras"), "untrained": str(out / "untrained.keras"),
            **{key: reference[key] for key in reference.files}}


@pytest.fixture(scope="session")
def small_curated_test_set(spark, small_mnist_model, tmp_path_factory):
    """The fixture model's 1,000 test images as curated Parquet (CURATED_SCHEMA, 4 files)."""
    from pipeline.schema import CURATED_SCHEMA
    path = str(tmp_path_factory.mktemp("curated") / "test")
    rows = [(f"t10k:{i}", image.tolist(), int(label)) for i, (image, label) in
            enumerate(zip(small_mnist_model["images"], small_mnist_model["labels"], strict=True))]
    spark.createDataFrame(rows, CURATED_SCHEMA).repartition(4).write.parquet(path)
    return path


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """The tiny world's input folder (tests/tiny_world.py): 3,000 + 1,000 real MNIST images as IDX files."""
    from tiny_world import write_tiny_world
    return write_tiny_world(tmp_path_factory.mktemp("tiny-world"))


@pytest.fixture(scope="session")
def mnist_curated(spark, tmp_path_factory):
    """The bundled MNIST ingested and prepared once (full profile: 54,000 / 6,000 / 10,000) under a session temp
    dir; returns (cfg, layout). Read layout.curated(split), layout.curated_manifest, layout.raw and friends."""
    from pipeline.data.ingest import run_ingest
    from pipeline.data.prepare import run_prepare
    from pipeline.layout import Layout
    root = tmp_path_factory.mktemp("mnist-curated")
    cfg = load_config(None, "full", [f"paths.data={root / 'data'}", f"paths.runs={root / 'runs'}",
                                     "spark.master=local[2]"])
    layout = Layout.from_config(cfg)
    run_ingest(spark, cfg, layout)
    run_prepare(spark, cfg, layout)
    return cfg, layout


@pytest.fixture
def small_disk(tmp_path):
    """`small_disk(kb)`: a new folder on a tmpfs of that size, to fill up: where a job's output meets a full disk.
    Mounting needs root, which this project's CI and dev machines have; elsewhere the test is skipped, saying so."""
    import subprocess
    mounts = []

    def mount(kb: int):
        folder = tmp_path / f"small-disk-{len(mounts)}"
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kb}k,mode=0700", "tmpfs", str(folder)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounts.append(folder)
        return folder
    yield mount
    for folder in mounts:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)
