"""Prediction: MNIST-convention image conversion, distributed scoring against the model's own predict, digit
pictures drawn here predicted right, and every bad input named in one line."""
from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset
import pytest
from PIL import Image
from pyspark.testing import assertDataFrameEqual

from pipeline import scoring
from pipeline.errors import PipelineError
from pipeline.formats.images import decode_image_file, to_mnist
from pipeline.layout import Layout, PredictionFiles
from pipeline.predict.stage import run_prediction
from pipeline.schema import CURATED_SCHEMA


def _bar_picture() -> np.ndarray:
    """A 100 x 50 bar of ink, off-centre in a 300 x 300 black picture."""
    canvas = np.zeros((300, 300), dtype=np.uint8)
    canvas[40:140, 200:250] = 255
    return canvas


def test_to_mnist_fits_the_ink_into_20x20_and_centres_it_by_mass():
    out = to_mnist(Image.fromarray(_bar_picture())).reshape(28, 28)
    # 100 x 50 -> 20 x 10 (longer side 20, aspect kept); its centre of mass (9.5, 4.5) moves to MNIST's (14, 14),
    # rounded half up: rows 5-24, columns 10-19.
    rows, cols = np.nonzero(out > 0.5)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (5, 24, 10, 19)
    assert out.dtype == np.float32 and out.max() == pytest.approx(1.0) and out.min() == 0.0


def test_to_mnist_gives_the_same_digit_for_dark_on_light_colour_pictures():
    light_on_dark = to_mnist(Image.fromarray(_bar_picture()))
    ink = _bar_picture() > 0
    colour = np.zeros((300, 300, 3), dtype=np.uint8)
    colour[~ink] = (250, 240, 200)  # cream paper
    colour[ink] = (20, 20, 120)     # dark blue ink
    np.testing.assert_allclose(to_mnist(Image.fromarray(colour)), light_on_dark, atol=0.02)
    assert not to_mnist(Image.new("L", (50, 40), 255)).any()  # a blank page stays blank


def _ell_picture() -> np.ndarray:
    """Dark ink on white paper, an L (no symmetry: any turn or flip of it is a different picture)."""
    canvas = np.full((120, 90), 255, dtype=np.uint8)
    canvas[10:110, 20:35] = 0
    canvas[95:110, 20:75] = 0
    return canvas


@pytest.mark.parametrize(("mode", "to_wide"), [
    ("I;16", lambda grey: grey.astype(np.uint16) * 257),          # a 16-bit scan
    ("I", lambda grey: grey.astype(np.int32) * 257),              # 32-bit integers holding 16-bit values
    ("F", lambda grey: grey.astype(np.float32) / 255),            # floats in [0, 1]
])
def test_a_wide_greyscale_picture_reads_as_its_8_bit_version(tmp_path, mode, to_wide):
    """PIL's convert("L") clips such values at 255: a 16-bit scan of a digit turned into a blank page."""
    Image.fromarray(_ell_picture()).save(tmp_path / "eight.png")
    wide = Image.fromarray(to_wide(_ell_picture()))
    assert wide.mode == mode
    wide.save(tmp_path / "wide.tif")
    eight, wide_read = (decode_image_file(str(tmp_path / name), 10**6) for name in ("eight.png", "wide.tif"))
    assert wide_read[1] is None and wide_read[0].any()
    np.testing.assert_allclose(wide_read[0], eight[0], atol=1e-5)


def test_a_16_bit_png_reads_as_its_8_bit_version(tmp_path):
    Image.fromarray(_ell_picture()).save(tmp_path / "eight.png")
    Image.fromarray(_ell_picture().astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    eight, sixteen = (decode_image_file(str(tmp_path / name), 10**6)[0] for name in ("eight.png", "sixteen.png"))
    assert sixteen.any()
    np.testing.assert_allclose(sixteen, eight, atol=1e-5)


@pytest.mark.parametrize(("orientation", "stored_as"), [(6, Image.Transpose.ROTATE_90), (8, Image.Transpose.ROTATE_270),
                                                         (3, Image.Transpose.ROTATE_180),
                                                         (2, Image.Transpose.FLIP_LEFT_RIGHT)])
def test_a_picture_stored_turned_is_read_the_way_its_exif_orientation_shows_it(tmp_path, orientation, stored_as):
    """A phone keeps the sensor's pixels and says in EXIF how to turn them; viewers (and people) see it turned."""
    upright = Image.fromarray(_ell_picture())
    upright.save(tmp_path / "upright.png")
    exif = Image.Exif()
    exif[0x0112] = orientation
    upright.transpose(stored_as).save(tmp_path / "stored.png", exif=exif)
    read, expected = (decode_image_file(str(tmp_path / name), 10**6) for name in ("stored.png", "upright.png"))
    assert read[1] is None
    np.testing.assert_allclose(read[0], expected[0], atol=1e-6)


def _digit_picture(image: np.ndarray, style: str) -> Image.Image:
    """An MNIST digit as a user might photograph or draw it: upscaled, off-centre, in a chosen polarity."""
    digit = Image.fromarray(np.round(image.reshape(28, 28) * 255).astype(np.uint8)).resize((70, 70), Image.BICUBIC)
    if style == "dark-on-light":   # black ink on white, 100 x 100, pushed to the top right
        canvas = Image.new("L", (100, 100), 255)
        canvas.paste(Image.eval(digit, lambda v: 255 - v), (28, 2))
        return canvas
    if style == "colour":          # dark red ink on pale yellow, RGB, 120 x 90
        ink = np.asarray(digit, dtype=np.float32)[..., None] / 255
        paper, pen = np.array([250, 245, 180]), np.array([140, 10, 10])
        canvas = np.full((90, 120, 3), paper, dtype=np.float32)
        canvas[5:75, 40:110] = paper * (1 - ink) + pen * ink
        return Image.fromarray(canvas.astype(np.uint8))
    canvas = Image.new("L", (160, 120), 0)  # light-on-dark, landscape, bottom left
    canvas.paste(digit, (10, 45))
    return canvas


@pytest.fixture(scope="module")
def digit_folder(small_mnist_model, tmp_path_factory):
    """Six test digits the model is sure of on the 28x28 originals, redrawn as ordinary PNG/JPEG pictures."""
    probabilities, labels = small_mnist_model["probabilities"], small_mnist_model["labels"]
    sure = [i for i in range(len(labels)) if probabilities[i].argmax() == labels[i] and probabilities[i].max() > 0.97]
    chosen = [next(i for i in sure if labels[i] == digit) for digit in (0, 2, 3, 5, 7, 9)]
    folder = tmp_path_factory.mktemp("digits")
    expected = {}
    for n, index in enumerate(chosen):
        style = ("dark-on-light", "colour", "light-on-dark")[n % 3]
        name = f"digit_{n}_{style}.{'jpg' if style == 'light-on-dark' else 'png'}"
        _digit_picture(small_mnist_model["images"][index], style).save(folder / name)
        expected[name] = int(labels[index])
    return folder, expected


def test_digit_pictures_are_predicted_correctly_and_printed(spark, make_config, small_mnist_model, digit_folder,
                                                             capsys):
    folder, expected = digit_folder
    cfg = make_config()
    summary = run_prediction(spark, cfg, Layout.from_config(cfg, "run"), input_path=str(folder),
                             model=small_mnist_model["trained"]).details
    assert summary["input_kind"] == "images" and summary["count"] == 6
    assert _required_in_the_files(PredictionFiles(summary["output"]).predictions) == {"prediction", "probabilities"}
    rows = spark.read.parquet(PredictionFiles(summary["output"]).predictions).collect()
    assert {Path(r["path"]).name: r["prediction"] for r in rows} == expected
    assert all(len(r["probabilities"]) == 10 and r["model"] == "trained" and r["run_id"] == "run" for r in rows)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["file", "label", "confidence"]
    assert {line.split()[0]: int(line.split()[1]) for line in printed[1:]} == expected


def test_parquet_predictions_equal_the_models_own_predict(spark, make_config, small_mnist_model,
                                                          small_curated_test_set, tmp_path):
    cfg = make_config("predict.batch_size=100")
    summary = run_prediction(spark, cfg, Layout.from_config(cfg, "run"), input_path=small_curated_test_set,
                             model=small_mnist_model["trained"], output=str(tmp_path / "out")).details
    out = PredictionFiles(str(tmp_path / "out"))
    predictions = spark.read.parquet(out.predictions)
    assert predictions.columns == ["record_id", "label", "prediction", "confidence", "probabilities", "model",
                                   "run_id", "model_version"]
    assert predictions.schema["model_version"].dataType.simpleString() == "string"
    assert _required_in_the_files(out.predictions) == {"prediction", "probabilities"}
    assert predictions.filter("model_version is not null").count() == 0  # not a registry model
    reference = small_mnist_model["probabilities"]
    expected = spark.createDataFrame([(f"t10k:{i}", int(p.argmax()), p.tolist()) for i, p in enumerate(reference)],
                                     "record_id string, prediction int, probabilities array<float>")
    assertDataFrameEqual(predictions.select("record_id", "prediction", "probabilities"), expected, rtol=0.0,
                         atol=1e-5)
    expected_accuracy = float((reference.argmax(axis=1) == small_mnist_model["labels"]).mean())
    metrics = json.loads(Path(out.metrics).read_text())
    assert summary["accuracy"] == metrics["accuracy"] == pytest.approx(expected_accuracy)
    matrix = np.loadtxt(out.confusion_matrix, delimiter=",", skiprows=1)[:, 1:]
    assert matrix.sum() == 1000 and np.trace(matrix) == round(expected_accuracy * 1000)


def _required_in_the_files(folder: str) -> set[str]:
    """The output-contract columns the Parquet files declare never null (Spark reads every column as nullable)."""
    schema = pyarrow.dataset.dataset(folder).schema
    return {f.name for f in schema if not f.nullable} - {"path", "record_id", "model", "run_id", "label"}


class _CountingModel:
    """Stands in for a Keras model: probability 1 on (the image's pixel sum rounded) mod 10; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def predict_on_batch(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(x), 10), dtype=np.float32)
        out[np.arange(len(x)), np.round(x.reshape(len(x), -1).sum(axis=1)).astype(int) % 10] = 1.0
        return out


def test_image_files_are_decoded_and_scored_in_one_pass_unreadable_ones_kept_with_their_reason(tmp_path,
                                                                                                monkeypatch):
    names = ["a.png", "broken.png", "c.png", "d.png", "e.png"]
    for n, name in enumerate(names):
        if name == "broken.png":
            (tmp_path / name).write_bytes(b"not a picture")
        else:
            Image.fromarray(_bar_picture() if n % 2 else 255 - _bar_picture()).save(tmp_path / name)
    model, loads = _CountingModel(), []
    monkeypatch.setattr(scoring, "load_model_cached", lambda path, threads: loads.append(path) or model)
    batch = pd.DataFrame({"path": names, "source": [str(tmp_path / name) for name in names]})
    only_broken = batch.iloc[[1]]
    out = list(scoring.score_file_batches(iter([only_broken, batch]), "m.keras", 2, 1, 10**6))
    assert loads == ["m.keras"] and model.calls == 2  # not loaded for the batch with no readable file; 4 by 2
    assert out[0]["path"].tolist() == ["broken.png"] and out[0]["prediction"].tolist() == [None]
    assert out[0]["error"].iloc[0].startswith("UnidentifiedImageError")
    scored = out[1]
    assert scored["path"].tolist() == names and scored["error"].isna().tolist() == [True, False, True, True, True]
    for name, prediction, probabilities in zip(names, scored["prediction"], scored["probabilities"], strict=True):
        if name == "broken.png":
            assert prediction is None and probabilities is None
            continue
        expected = int(np.round(decode_image_file(str(tmp_path / name), 10**6)[0].sum())) % 10
        assert prediction == expected and probabilities.argmax() == expected and len(probabilities) == 10


def _csv_rows(path: Path) -> list[list[str]]:
    return list(csv.reader(path.read_text().splitlines()))


def test_every_unreadable_image_is_listed_whether_the_job_fails_or_skips_it(spark, make_config, small_mnist_model,
                                                                            digit_folder, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(digit_folder[0], folder)
    (folder / "broken.png").write_bytes(b"this is not a picture")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("ignored: not an image file name")
    expected = [["path", "reason"],
                [str(folder / "broken.png"), "UnidentifiedImageError: not a PNG, JPEG, BMP, GIF, TIFF, WEBP image"],
                [str(folder / "empty.png"), "empty file (0 bytes)"]]
    out = PredictionFiles(str(tmp_path / "out"))
    failed_list = Path(out.failed_unreadable_list)
    assert failed_list == tmp_path / "out.unreadable.csv"  # beside the folder, not in it
    cfg = make_config()
    with pytest.raises(PipelineError, match=rf"^unreadable image .*/broken\.png \(UnidentifiedImageError: not a PNG.*"
                                            rf"\); 2 unreadable file\(s\) in .*mixed, all listed in "
                                            rf"{failed_list} \(set predict\.skip_unreadable_images=true"):
        run_prediction(spark, cfg, Layout.from_config(cfg, "run"), input_path=str(folder),
                       model=small_mnist_model["trained"], output=out.root)
    assert _csv_rows(failed_list) == expected and not Path(out.root).exists()

    lenient = make_config("predict.skip_unreadable_images=true")
    summary = run_prediction(spark, lenient, Layout.from_config(lenient, "run"), input_path=str(folder),
                             model=small_mnist_model["trained"], output=out.root).details
    assert (summary["count"], summary["unreadable_count"]) == (6, 2)
    assert summary["unreadable_list"] == out.unreadable_list and _csv_rows(Path(out.unreadable_list)) == expected
    assert json.loads(Path(out.manifest).read_text())["unreadable_count"] == 2
    assert not failed_list.exists()  # the failed attempt's list went with its failure


@pytest.mark.parametrize("policy", ["quarantine", "drop", "warn", "fail"])
def test_a_blank_page_follows_data_blank_images_as_in_ingest_and_scheduled_scoring(spark, make_config,
                                                                                   small_mnist_model, digit_folder,
                                                                                   tmp_path, policy):
    """A blank white page has no digit, yet a model names one at 0.99: it is a blank image, by the same policy."""
    folder = tmp_path / "pages"
    folder.mkdir()
    digit = sorted(digit_folder[0].iterdir())[0]
    shutil.copy(digit, folder / digit.name)
    Image.new("L", (120, 160), 255).save(folder / "white_page.png")
    cfg = make_config(f"data.blank_images={policy}", "predict.skip_unreadable_images=true")
    layout, out = Layout.from_config(cfg, "run"), str(tmp_path / "out")
    if policy == "fail":
        with pytest.raises(PipelineError, match=r"^blank image .*/white_page\.png \(no ink\) in .*pages: 1 blank "
                                                r"file\(s\) and data\.blank_images is fail$"):
            run_prediction(spark, cfg, layout, input_path=str(folder), model=small_mnist_model["trained"], output=out)
        assert not Path(out).exists()
        return
    summary = run_prediction(spark, cfg, layout, input_path=str(folder), model=small_mnist_model["trained"],
                             output=out).details
    predicted = sorted(Path(r["path"]).name for r in spark.read.parquet(PredictionFiles(out).predictions).collect())
    assert predicted == sorted([digit.name] + (["white_page.png"] if policy == "warn" else []))
    assert summary["blank_images"] == {"count": 1, "policy": policy, "first": str(folder / "white_page.png")}
    if policy == "quarantine":
        assert _csv_rows(Path(PredictionFiles(out).unreadable_list))[1] == [
            str(folder / "white_page.png"), "blank image: no ink (data.blank_images is quarantine)"]


def test_parquet_from_another_writer_without_ids_is_read_by_row_group_and_named_by_file_and_row(
        spark, make_config, small_mnist_model, tmp_path):
    """Parquet that did not come from prepare: no record_id, float64 images, int64 labels, several row groups per
    file. Each record is '<file>:<row in the file>' (rows counted across row groups, so a rerun names the same
    records alike), and a bad value in such a file is named by the same file and row. Scored in the driver (at most
    predict.driver_max_images rows) or on the executors' Python workers, alike."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    images, labels = small_mnist_model["images"][:300].astype(np.float64), small_mnist_model["labels"][:300]
    folder = tmp_path / "scans"
    folder.mkdir()
    for part, rows in enumerate((slice(0, 120), slice(120, 300))):
        table = pa.table({"label": pa.array(labels[rows], pa.int64()),
                          "image": pa.array(list(images[rows]), pa.list_(pa.float64()))})
        pq.write_table(table, folder / f"part-{part}.parquet", row_group_size=50)
    in_driver, on_executors = make_config("predict.batch_size=32"), make_config("predict.batch_size=32",
                                                                              "predict.driver_max_images=0")
    layout = Layout.from_config(in_driver, "run")
    runs = []
    for i, cfg in enumerate((in_driver, on_executors)):
        scoring._MODEL_CACHE.clear()
        runs.append(run_prediction(spark, cfg, layout, input_path=str(folder), model=small_mnist_model["trained"],
                                   output=str(tmp_path / f"out{i}")).details)
        assert (small_mnist_model["trained"] in scoring._MODEL_CACHE) == (cfg is in_driver)  # who loaded the model
    assert [run["scored_in"] for run in runs] == ["driver", "executors"]      # as the manifest and report say
    predictions = [spark.read.parquet(PredictionFiles(run["output"]).predictions) for run in runs]
    first_file = [f"{folder}/part-0.parquet:{row}" for row in range(120)]
    second_file = [f"{folder}/part-1.parquet:{row}" for row in range(180)]
    expected = spark.createDataFrame(
        [(record, int(label), int(p.argmax()), p.tolist()) for record, label, p in
         zip(first_file + second_file, labels, small_mnist_model["probabilities"][:300], strict=True)],
        "record_id string, label int, prediction int, probabilities array<float>")
    for scored in predictions:
        assertDataFrameEqual(scored.select("record_id", "label", "prediction", "probabilities"), expected,
                             rtol=0.0, atol=1e-5)
    assert runs[0]["count"] == 300 and runs[0]["accuracy"] == pytest.approx(
        float((small_mnist_model["probabilities"][:300].argmax(axis=1) == labels).mean()))

    images[170, 5] = np.nan  # row 50 of part-1, in its second row group
    pq.write_table(pa.table({"label": pa.array(labels[120:300], pa.int64()),
                             "image": pa.array(list(images[120:300]), pa.list_(pa.float64()))}),
                   folder / "part-1.parquet", row_group_size=50)
    for cfg in (in_driver, on_executors):
        with pytest.raises(PipelineError, match=r"^[^\n]*scans/part-1\.parquet: image values must lie in \[0, 1\] "
                                                r"\(the curated, normalised schema\) in record "
                                                r"[^ ]*scans/part-1\.parquet:50 \(1 bad row\)$"):
            run_prediction(spark, cfg, layout, input_path=str(folder), model=small_mnist_model["trained"],
                           output=str(tmp_path / "out-bad"))
        assert not (tmp_path / "out-bad").exists()


def test_parquet_with_wrong_image_size_or_values_is_named_and_nothing_published(spark, make_config,
                                                                               small_mnist_model, tmp_path):
    cfg = make_config()
    path = str(tmp_path / "wrong.parquet")
    spark.createDataFrame([("r0", [0.5] * 100, 3)], CURATED_SCHEMA).coalesce(1).write.parquet(path)
    with pytest.raises(PipelineError, match=r"^[^\n]*wrong\.parquet/part-[^ ]+\.parquet: image arrays must hold 784 "
                                            r"values \(28x28x1\), found 100 in record r0 \(1 bad row\)$"):
        run_prediction(spark, cfg, Layout.from_config(cfg, "run"), input_path=path, model=small_mnist_model["trained"],
                       output=str(tmp_path / "out"))
    path = str(tmp_path / "raw.parquet")
    rows = [("r0", [0.5] * 784, 3), ("r1", [255.0] * 784, 4), ("r2", [-1.0] * 784, 5)]
    spark.createDataFrame(rows, CURATED_SCHEMA).coalesce(1).write.parquet(path)
    with pytest.raises(PipelineError, match=r"^[^\n]*raw\.parquet/part-[^ ]+\.parquet: image values must lie in "
                                            r"\[0, 1\] \(the curated, normalised schema\) in record r[12] "
                                            r"\(2 bad rows\)$"):
        run_prediction(spark, cfg, Layout.from_config(cfg, "run"), input_path=path, model=small_mnist_model["trained"],
                       output=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_model_that_cannot_be_found_is_named(spark, make_config, small_curated_test_set, tmp_path):
    cfg = make_config()
    layout = Layout.from_config(cfg, "run")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PipelineError, match=r"no saved model at .*/empty: expected a \.keras file, or a folder "
                                            r"holding model\.keras"):
        run_prediction(spark, cfg, layout, input_path=small_curated_test_set, model=str(tmp_path / "empty"))
    with pytest.raises(PipelineError, match=r"^.*/evaluate/best_model\.json not found: run jobs/evaluate\.py first, "
                                            r"or pass --model <name or path>$"):
        run_prediction(spark, cfg, layout, input_path=small_curated_test_set)
    with pytest.raises(PipelineError, match=r"^.*/train/model_2/model\.keras not found: run jobs/train\.py first, "
                                            r"or pass --model <path to a \.keras file>$"):
        run_prediction(spark, cfg, layout, input_path=small_curated_test_set, model="model_2")


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes (magic 0x0000 08 ndim, big-endian dims, data), gzip-compressed."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_idx_input_is_read_by_the_data_stage_and_normalised_like_prepare(spark, make_config, small_mnist_model,
                                                                          tmp_path):
    pixels = np.round(small_mnist_model["images"][:200] * 255).reshape(200, 28, 28)  # exact: images are k/255
    _write_idx(tmp_path / "new-images-idx3-ubyte.gz", pixels)
    _write_idx(tmp_path / "new-labels-idx1-ubyte.gz", small_mnist_model["labels"][:200])
    cfg = make_config()
    summary = run_prediction(spark, cfg, Layout.from_config(cfg, "run"),
                             input_path=str(tmp_path / "new-images-idx3-ubyte.gz"),
                             model=small_mnist_model["trained"]).details
    assert (summary["input_kind"], summary["count"]) == ("raw", 200)
    predictions = spark.read.parquet(PredictionFiles(summary["output"]).predictions).select("record_id",
                                                                                            "prediction")
    expected = small_mnist_model["probabilities"][:200].argmax(axis=1)
    assertDataFrameEqual(predictions, spark.createDataFrame(
        [(f"new-images-idx3-ubyte.gz:{i}", int(p)) for i, p in enumerate(expected)],
        "record_id string, prediction int"))
    assert summary["accuracy"] == pytest.approx(float((expected == small_mnist_model["labels"][:200]).mean()))
    with pytest.raises(PipelineError, match=r"new-labels-idx1-ubyte\.gz: not a Parquet, image, \.npz or \.csv file"):
        run_prediction(spark, cfg, Layout.from_config(cfg, "run"),
                       input_path=str(tmp_path / "new-labels-idx1-ubyte.gz"), model=small_mnist_model["trained"])
