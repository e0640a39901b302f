"""Serving the champion with MLflow's own scoring server (`make serve` = scripts/serve.py): a registered version
answers [0, 1] floats, 0-255 pixels and image files alike, as jobs/predict.py scores them; bad requests get a 400
with one line; stopping the server leaves no process behind."""
from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from registry_versions import make_champion

from pipeline.config import REPO_ROOT, load_config
from pipeline.layout import Layout, PredictionFiles

IMAGES = 24
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def champion_store(small_mnist_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    overrides = [f"paths.mlflow={root / 'mlflow'}", f"paths.runs={root / 'runs'}"]
    cfg = load_config(None, "full", overrides)
    make_champion(cfg, small_mnist_model["trained"], "model_1", 0.95)
    return cfg, overrides, root


@pytest.fixture(scope="module")
def scans(small_mnist_model, tmp_path_factory):
    """Test digits as scanned files, the way scripts/simulate_arrivals.py writes a day's arrivals."""
    from pipeline.batch.arrivals import encoded, scanned
    folder = tmp_path_factory.mktemp("scans")
    rng = np.random.default_rng(7)
    for i, image in enumerate(small_mnist_model["images"][:IMAGES]):
        name, data = encoded(f"scan-{i:04d}", scanned(np.round(image * 255).astype(np.uint8).reshape(28, 28), rng),
                             rng)
        (folder / name).write_bytes(data)
    return folder


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    children = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), set()).add(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(champion_store):
    """scripts/serve.py (what `make serve` runs) on a free loopback port; yields (url, its process, log path)."""
    _, overrides, root = champion_store
    port = _free_port()
    log = root / "serve.log"
    command = [sys.executable, "scripts/serve.py", "--port", str(port)] + [a for o in overrides for a in ("--set", o)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            time.sleep(1)
    assert proc.poll() is None, log.read_text()[-3000:]
    try:
        yield url, proc, log
    finally:
        workers = _descendants(proc.pid)
        if proc.poll() is None:  # a test failed before the one that stops it: stop it as a user would
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def _post(url: str, payload) -> tuple[int, dict]:
    request = urllib.request.Request(f"{url}/invocations", json.dumps(payload).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def _digits(answer: dict) -> list[int]:
    return [row["digit"] for row in answer["predictions"]]


def test_floats_pixels_and_image_files_get_the_digits_predict_gives(server, champion_store, scans, spark,
                                                                    small_mnist_model, tmp_path):
    from pipeline.predict.stage import run_prediction
    url, _, _ = server
    cfg, _, _ = champion_store
    images = small_mnist_model["images"][:IMAGES].reshape(-1, 28, 28, 1)
    expected = small_mnist_model["probabilities"][:IMAGES].argmax(axis=1).tolist()  # the model's own predict

    status, floats = _post(url, {"inputs": images.tolist()})
    assert status == 200 and _digits(floats) == expected
    assert set(floats["predictions"][0]) == {"digit", "confidence", "probabilities"}
    assert np.allclose([row["probabilities"] for row in floats["predictions"]],
                       small_mnist_model["probabilities"][:IMAGES], atol=1e-5)
    pixels = np.round(images * 255).astype(np.uint8).reshape(-1, 28, 28)  # MNIST's own form: uint8, no channel
    status, answer = _post(url, {"inputs": pixels.tolist()})
    assert status == 200 and _digits(answer) == expected

    files = sorted(scans.iterdir())
    status, answer = _post(url, {"inputs": [base64.b64encode(f.read_bytes()).decode() for f in files]})
    assert status == 200, answer
    scored = run_prediction(spark, cfg, Layout.from_config(cfg, "serving"), input_path=str(scans),
                            model=f"models:/{cfg.tracking.registered_model}@champion",
                            output=str(tmp_path / "predicted")).details
    rows = spark.read.parquet(PredictionFiles(scored["output"]).predictions).select("path", "prediction")
    by_file = {os.path.basename(r.path): r.prediction for r in rows.collect()}
    assert _digits(answer) == [by_file[f.name] for f in files]
    assert sum(d == e for d, e in zip(_digits(answer), expected, strict=True)) >= IMAGES * 0.75  # they are scans


@pytest.mark.parametrize(("payload", "line"), [
    ("pixels as floats", "float pixels from 0 to 255: float images are [0, 1] (send 0-255 pixels as integers)"),
    ("flat rows", "input of shape (2, 784): a batch of digit images, one kind per request: [0, 1] floats of shape "
                  "(n, 28, 28) or (n, 28, 28, 1); 0-255 integers of the same shapes; or image files (PNG, JPEG, "
                  "...) as base64 strings, shape (n,)"),
    ("text file", "input 1 is not a readable image file: UnidentifiedImageError: not a PNG, JPEG, BMP, GIF, TIFF, "
                  "WEBP image"),
    ("not base64", "input 0 is not a base64-encoded image file"),
    ("blank page", "input 0 is a blank image (no ink) and data.blank_images is quarantine: 1 blank image(s) in the "
                   "request"),
])
def test_a_request_outside_what_it_accepts_gets_400_and_one_line(server, small_mnist_model, scans, payload, line):
    url, _, _ = server
    images = small_mnist_model["images"][:2]
    png = base64.b64encode(sorted(scans.glob("*.png"))[0].read_bytes()).decode()
    inputs = {"pixels as floats": np.round(images * 255).reshape(-1, 28, 28, 1).tolist(),
              "flat rows": images.tolist(),
              "text file": [png, base64.b64encode(b"digit: 7\n").decode()],
              "not base64": ["this is not base64!"],
              "blank page": np.zeros((1, 28, 28), np.uint8).tolist()}[payload]
    status, answer = _post(url, {"inputs": inputs})
    assert (status, answer["error_code"], answer["message"]) == (400, "INVALID_PARAMETER_VALUE", line)


def test_stopping_the_server_stops_its_workers_and_frees_the_port(server):
    """Run last in this module: it stops the module's server, with SIGINT as Ctrl-C sends it."""
    url, proc, log = server
    workers = _descendants(proc.pid)
    assert workers, "the scoring server runs below scripts/serve.py"
    assert f"serving models:/mnist-digit-classifier/1 on {url}/invocations" in log.read_text()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    assert not [pid for pid in workers if _alive(pid)]
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/ping", timeout=2)


def _serve_once(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/serve.py", *(a for o in overrides for a in ("--set", o))],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)


def test_serving_without_a_store_or_a_champion_is_one_line(champion_store, tmp_path):
    answer = _serve_once(f"paths.mlflow={tmp_path / 'mlflow'}", f"paths.runs={tmp_path / 'runs'}")
    assert (answer.returncode, answer.stderr.strip().splitlines()) == (1, [
        f"ERROR [serve]: no MLflow store at {tmp_path}/mlflow/mlflow.db yet: run the pipeline first (make run), "
        "which registers the models it trains"])
    _, overrides, root = champion_store
    answer = _serve_once(*overrides, "tracking.registered_model=other")
    assert (answer.returncode, answer.stderr.strip().splitlines()) == (1, [
        f"ERROR [serve]: no registered model 'other' in MLflow store sqlite:///{root}/mlflow/mlflow.db"])


def test_a_version_registered_before_the_served_model_is_refused_in_one_line(small_mnist_model, tmp_path):
    """Its pyfunc is MLflow's TensorFlow one, which answered 0-255 pixels with confident wrong digits."""
    overrides = [f"paths.mlflow={tmp_path / 'mlflow'}", f"paths.runs={tmp_path / 'runs'}"]
    cfg = load_config(None, "full", overrides)
    make_champion(cfg, small_mnist_model["trained"], "model_1", 0.95)
    [mlmodel] = (tmp_path / "mlflow" / "artifacts").rglob("MLmodel")
    mlmodel.write_text(mlmodel.read_text().replace("loader_module: pipeline.tracking.served_model",
                                                   "loader_module: mlflow.tensorflow"))
    answer = _serve_once(*overrides)
    assert (answer.returncode, answer.stderr.strip().splitlines()) == (1, [
        "ERROR [serve]: models:/mnist-digit-classifier@champion is version 1, registered before the served model "
        "existed (its pyfunc loader is mlflow.tensorflow): train again to register one to serve, e.g. make run "
        'ARGS="--from train"'])
