"""Prediction facing hostile inputs: model files that would run code when loaded are refused in one line on the
driver (and nothing they hold ever runs), symlinks cannot lead out of an input folder or loop, and images too big
to decode safely are refused with the reason."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.errors import PipelineError
from pipeline.layout import Layout, PredictionFiles
from pipeline.model_files import load_keras_model
from pipeline.predict.stage import run_prediction

# Built in a subprocess (the pytest process never imports TensorFlow): one small model whose Lambda layer creates
# the marker file whenever its Python code runs, saved as .keras, as HDF5, as a SavedModel folder and as HDF5
# under a .keras name. The script proves each payload is live: loaded without safe mode, each creates the marker.
_BUILD_HOSTILE_MODELS = """
import os, shutil, sys
import tensorflow as tf

out, marker = sys.argv[1], sys.argv[2]
payload = eval(f"lambda x: (open({marker!r}, 'a').close(), x)[1]")
inputs = tf.keras.Input((28, 28, 1))
x = tf.keras.layers.Lambda(payload, name="payload")(inputs)
model = tf.keras.Model(inputs, tf.keras.layers.Dense(10, activation="softmax")(tf.keras.layers.Flatten()(x)))
model.save(os.path.join(out, "lambda.keras"))
model.save(os.path.join(out, "lambda.h5"))
model.save(os.path.join(out, "lambda_savedmodel"), save_format="tf")
shutil.copy(os.path.join(out, "lambda.h5"), os.path.join(out, "disguised.keras"))

def fires(name, **options):
    if os.path.exists(marker):
        os.remove(marker)
    tf.keras.models.load_model(os.path.join(out, name), **options)
    fired = os.path.exists(marker)
    if fired:
        os.remove(marker)
    return fired

assert fires("lambda.keras", safe_mode=False)
assert fires("lambda.h5") and fires("lambda_savedmodel")
assert fires("disguised.keras")  # Keras' own default (safe_mode=True) runs it: the name hides the HDF5 format
"""


@pytest.fixture(scope="module")
def hostile_models(tmp_path_factory):
    """(folder holding the hostile models, marker path that appears when their code runs)."""
    out = tmp_path_factory.mktemp("hostile-models")
    marker = out / "payload-ran"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run([sys.executable, "-c", _BUILD_HOSTILE_MODELS, str(out), str(marker)], check=True, env=env,
                   timeout=300)
    assert not marker.exists()
    return out, marker


def _last_spark_job(spark) -> int:
    return max(spark.sparkContext.statusTracker().getJobIdsForGroup(), default=-1)


@pytest.mark.parametrize("model, message", [
    ("lambda.keras", r"model .*/lambda\.keras refused: it holds a Lambda layer 'payload' \(Python code"),
    ("disguised.keras", r"model .*/disguised\.keras refused: not a valid \.keras file \(not a readable zip"),
    ("lambda.h5", r"model .*/lambda\.h5: HDF5 model files \(\.h5, \.hdf5\) are refused because loading them can "
                  r"run code .* convert it in a trusted session: tf\.keras\.models\.load_model\('.*/lambda\.h5'\)"
                  r"\.save\('lambda\.keras'\)$"),
    ("lambda_savedmodel", r"model .*/lambda_savedmodel: SavedModel folders are refused because loading them can "
                          r"run code .*\.save\('lambda_savedmodel\.keras'\)$"),
])
def test_a_model_file_that_could_run_code_is_refused_before_any_spark_job(spark, make_config, hostile_models,
                                                                          small_curated_test_set, tmp_path, model,
                                                                          message):
    folder, marker = hostile_models
    cfg = make_config()
    last_job = _last_spark_job(spark)
    with pytest.raises(PipelineError, match=message) as refused:
        run_prediction(spark, cfg, Layout.from_config(cfg, "run"), input_path=small_curated_test_set,
                       model=str(folder / model), output=str(tmp_path / "out"))
    assert "\n" not in str(refused.value)
    assert _last_spark_job(spark) == last_job
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_workers_load_only_checked_keras_archives(hostile_models):
    """A model swapped after the driver's check still never reaches a legacy loader or a Lambda on a worker."""
    folder, marker = hostile_models
    with pytest.raises(ValueError, match=r"model .*/disguised\.keras refused: not a valid \.keras file"):
        load_keras_model(str(folder / "disguised.keras"))
    with pytest.raises(ValueError, match=r"model .*/lambda\.keras refused: it holds a Lambda layer 'payload'"):
        load_keras_model(str(folder / "lambda.keras"))
    assert not marker.exists()


def _rewrite_config(source: str, target: Path, edit) -> str:
    """A copy of the .keras archive `source` whose config.json is edit(config)."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as out:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "config.json":
                data = json.dumps(edit(json.loads(data))).encode()
            out.writestr(info, data)
    return str(target)


def _set_dense_activation(config: dict, activation) -> dict:
    next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")["config"]["activation"] = \
        activation
    return config


def _rename_flatten(config: dict) -> dict:
    next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Flatten")["class_name"] = "NoSuch"
    return config


def test_a_keras_file_that_does_not_load_in_safe_mode_is_one_line(spark, make_config, small_mnist_model,
                                                                  small_curated_test_set, tmp_path):
    exec_activation = {"module": "builtins", "class_name": "function", "config": "exec", "registered_name": "exec"}
    lambda_activation = {"module": "builtins", "class_name": "__lambda__", "config": {"value": ["", None, None]}}
    trained = small_mnist_model["trained"]
    (tmp_path / "garbage.keras").write_bytes(b"not a zip archive")
    cases = {
        str(tmp_path / "garbage.keras"): r"garbage\.keras refused: not a valid \.keras file \(not a readable zip",
        _rewrite_config(trained, tmp_path / "exec.keras", lambda c: _set_dense_activation(c, exec_activation)):
            r"exec\.keras refused: its config names function 'exec' from module 'builtins', not from Keras",
        _rewrite_config(trained, tmp_path / "lambda_fn.keras", lambda c: _set_dense_activation(c, lambda_activation)):
            r"lambda_fn\.keras refused: it holds a Lambda layer",
        _rewrite_config(trained, tmp_path / "unknown.keras", _rename_flatten):  # passes the archive check
            r"unknown\.keras cannot be loaded safely: TypeError: .*NoSuch",
    }
    cfg = make_config()
    for model, message in cases.items():
        with pytest.raises(PipelineError, match=message) as refused:
            run_prediction(spark, cfg, Layout.from_config(cfg, "run"), input_path=small_curated_test_set,
                           model=model, output=str(tmp_path / "out"))
        assert "\n" not in str(refused.value) and not (tmp_path / "out").exists()


def _save_digit(small_mnist_model, index: int, path: Path) -> Path:
    """Test image `index` as an 8-bit PNG, 56 x 56."""
    pixels = np.round(small_mnist_model["images"][index].reshape(28, 28) * 255).astype(np.uint8)
    Image.fromarray(pixels).resize((56, 56)).save(path)
    return path


def test_symlinks_count_each_real_file_once_and_never_lead_outside_or_loop(spark, make_config, small_mnist_model,
                                                                          tmp_path):
    folder, outside = tmp_path / "input", tmp_path / "elsewhere"
    (folder / "sub").mkdir(parents=True)
    outside.mkdir()
    real = [_save_digit(small_mnist_model, i, folder / f"digit_{i}.png") for i in range(3)]
    _save_digit(small_mnist_model, 3, outside / "secret.png")
    (folder / "loop").symlink_to(folder)                              # a folder loop: walked into forever before
    (folder / "sub" / "again.png").symlink_to(real[0])                # a second name for a file inside
    (folder / "outside.png").symlink_to(outside / "secret.png")       # a file outside
    (folder / "outside_folder").symlink_to(outside)                   # a folder outside
    (folder / "ring_a.png").symlink_to(folder / "ring_b.png")         # a file loop
    (folder / "ring_b.png").symlink_to(folder / "ring_a.png")
    cfg = make_config("predict.skip_unreadable_images=true")
    out = PredictionFiles(str(tmp_path / "out"))
    summary = run_prediction(spark, cfg, Layout.from_config(cfg, "run"), input_path=str(folder),
                             model=small_mnist_model["trained"], output=out.root).details
    scored = [r["path"] for r in spark.read.parquet(out.predictions).collect()]
    assert sorted(scored) == [str(path) for path in real]
    assert (summary["count"], summary["duplicate_links_skipped"], summary["unreadable_count"]) == (3, 1, 4)
    assert _csv_rows(Path(out.unreadable_list)) == [
        ["path", "reason"],
        [str(folder / "outside.png"), f"resolves outside the input folder (to {outside / 'secret.png'})"],
        [str(folder / "outside_folder"), f"folder resolves outside the input folder (to {outside})"],
        [str(folder / "ring_a.png"), "symbolic link loop"],
        [str(folder / "ring_b.png"), "symbolic link loop"]]


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height 8-bit grey pixels, with no pixel data: what a decoder sees first."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_images_over_the_pixel_cap_are_refused_from_their_header(spark, make_config, small_mnist_model, tmp_path):
    folder = tmp_path / "input"
    folder.mkdir()
    _save_digit(small_mnist_model, 0, folder / "digit.png")                            # 56 x 56 = 3,136 pixels
    Image.open(_save_digit(small_mnist_model, 1, folder / "wide.png")).resize((100, 100)).save(folder / "wide.png")
    big = np.zeros((4000, 4200), dtype=np.uint8)  # 16,800,000 pixels, just over the default cap of 4096 x 4096
    big[1000:3000, 2000:2400] = 255
    Image.fromarray(big).save(folder / "big.png")
    (folder / "bomb.png").write_bytes(_png_header_only(20_000, 20_000))
    assert (folder / "big.png").stat().st_size < 100_000

    def scored_and_unreadable(*overrides: str) -> tuple[int, list[list[str]]]:
        cfg = make_config("predict.skip_unreadable_images=true", *overrides)
        out = PredictionFiles(str(tmp_path / "out"))
        summary = run_prediction(spark, cfg, Layout.from_config(cfg, "run"), input_path=str(folder),
                                 model=small_mnist_model["trained"], output=out.root).details
        return summary["count"], _csv_rows(Path(out.unreadable_list))[1:]

    # Over Pillow's own limit (2 x 89,478,485 pixels), its decompression-bomb error is the reason, not a crash.
    bomb = [str(folder / "bomb.png"), "DecompressionBombError: Image size (400000000 pixels) exceeds limit of "
                                      "178956970 pixels, could be decompression bomb DOS attack."]
    assert scored_and_unreadable() == (2, [
        [str(folder / "big.png"), "4200x4000 = 16800000 pixels, more than predict.max_image_pixels 16777216"], bomb])
    assert scored_and_unreadable("predict.max_image_pixels=5000") == (1, [
        [str(folder / "big.png"), "4200x4000 = 16800000 pixels, more than predict.max_image_pixels 5000"], bomb,
        [str(folder / "wide.png"), "100x100 = 10000 pixels, more than predict.max_image_pixels 5000"]])


def _csv_rows(path: Path) -> list[list[str]]:
    return list(csv.reader(path.read_text().splitlines()))


def test_several_models_are_checked_by_one_loading_process_that_names_the_refused_one(small_mnist_model, tmp_path,
                                                                                     monkeypatch):
    from pipeline import model_files
    trained = small_mnist_model["trained"]
    good = [str(tmp_path / f"good-{i}.keras") for i in range(2)]
    for i, path in enumerate(good):   # bytes of their own: never verified before, each on its own
        Path(path).write_bytes(Path(trained).read_bytes() + bytes(i + 1))
    unknown = _rewrite_config(trained, tmp_path / "unknown.keras", _rename_flatten)
    probes = []
    real_probe = model_files._safe_load_refusal
    monkeypatch.setattr(model_files, "_safe_load_refusal", lambda models: probes.append(len(models)) or
                        real_probe(models))
    with pytest.raises(PipelineError, match=r"model .*/unknown\.keras cannot be loaded safely: TypeError: .*NoSuch"):
        model_files.check_model_files([*good, unknown])
    model_files.check_model_files(good)
    model_files.check_model_files(good)   # verified once in this process: no second probe
    assert probes == [3, 2]


def test_a_model_that_loaded_safely_is_not_probed_again_by_the_next_job(small_mnist_model, tmp_path, monkeypatch):
    """The safe-mode probe costs a TensorFlow import: a daily job scoring with the same champion pays it once per
    machine, remembered by the model's SHA-256 per TensorFlow version, in a folder nobody else can write."""
    from pipeline import model_files
    from pipeline.config import REPO_ROOT
    model = tmp_path / "champion.keras"
    model.write_bytes(Path(small_mnist_model["trained"]).read_bytes() + b"\0")  # bytes no test checked before
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    records = tmp_path / "checked"
    monkeypatch.setenv(model_files.CHECKED_MODELS_ENV, str(records))
    first_job = subprocess.run([sys.executable, "-c", "import sys; from pipeline.model_files import check_model_file;"
                                " check_model_file(sys.argv[1])", str(model)], cwd=REPO_ROOT, capture_output=True,
                               text=True, timeout=300)
    assert first_job.returncode == 0, first_job.stderr[-2000:]
    assert [p.name for p in model_files.checked_models_folder().iterdir()] == [digest]
    assert model_files.checked_models_folder().parent == records

    probes = []
    monkeypatch.setattr(model_files, "_safe_load_refusal", lambda models: probes.append(len(models)))
    monkeypatch.setattr(model_files, "_VERIFIED", set())              # the next job: a process of its own
    model_files.check_model_file(str(model))
    assert probes == []
    monkeypatch.setattr(model_files, "_VERIFIED", set())
    monkeypatch.setattr(model_files, "_tensorflow_version", lambda: "2.16.1")   # another Keras checks again
    model_files.check_model_file(str(model))
    assert probes == [1]
    monkeypatch.setattr(model_files, "_VERIFIED", set())
    model_files.checked_models_folder().chmod(0o777)                  # a record others could have written: no proof
    model_files.check_model_file(str(model))
    assert probes == [1, 1]


def test_a_refused_model_is_never_remembered(small_mnist_model, tmp_path, monkeypatch):
    from pipeline import model_files
    monkeypatch.setenv(model_files.CHECKED_MODELS_ENV, str(tmp_path / "checked"))
    unknown = _rewrite_config(small_mnist_model["trained"], tmp_path / "unknown.keras", _rename_flatten)
    for _ in range(2):
        with pytest.raises(PipelineError, match=r"cannot be loaded safely"):
            model_files.check_model_file(str(unknown))
    assert not model_files.checked_models_folder().exists() or not any(model_files.checked_models_folder().iterdir())
