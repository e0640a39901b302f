"""The tracking layer: the promotion rule, the registry on small real Keras models in a store under tmp_path,
predicting by alias, the config switch, and the MLflow UI launcher."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from registry_versions import register

from pipeline.config import REPO_ROOT
from pipeline.errors import PipelineError
from pipeline.layout import Layout
from pipeline.tracking.decision import Evidence, Figures, decide, newest_allowance

TARGET, MARGIN = 0.90, 0.002


def side(version, test, newest=None, images=200):
    return Evidence(version, Figures(test, 10_000), None if newest is None else Figures(newest, images))


@pytest.mark.parametrize(("challenger", "champion", "promoted", "reason"), [
    (0.95, None, True, "challenger test accuracy 0.9500 meets the target 0.9000 and there is no champion yet"),
    (0.89, None, False, "challenger test accuracy 0.8900 is below the target 0.9000"),
    (0.89, 0.85, False, "challenger test accuracy 0.8900 is below the target 0.9000"),
    (0.953, 0.950, True, "challenger test accuracy 0.9530 meets the target 0.9000; beats the champion's 0.9500 on "
                         "the same 10000 test images (+0.0030; margin 0.0020)"),
    (0.952, 0.950, True, "challenger test accuracy 0.9520 meets the target 0.9000; beats the champion's 0.9500 on "
                         "the same 10000 test images (+0.0020; margin 0.0020)"),
    (0.951, 0.950, False, "challenger test accuracy 0.9510 does not beat the champion's 0.9500 on the same 10000 "
                          "test images (+0.0010; margin 0.0020)"),
    (0.940, 0.950, False, "challenger test accuracy 0.9400 does not beat the champion's 0.9500 on the same 10000 "
                          "test images (-0.0100; margin 0.0020)"),
])
def test_the_promotion_rule_on_the_test_set(challenger, champion, promoted, reason):
    verdict = decide(side("2", challenger), None if champion is None else side("1", champion), TARGET, MARGIN)
    assert (verdict.promoted, verdict.reason) == (promoted, reason)


def test_a_zero_margin_still_needs_a_higher_accuracy():
    assert decide(side("2", 0.95), side("1", 0.95), TARGET, 0.0).promoted is False
    assert decide(side("2", 0.9501), side("1", 0.95), TARGET, 0.0).promoted is True


def test_the_newest_batches_allow_one_standard_error_of_the_champion_there():
    # 200 images at 98%: sqrt(0.98 * 0.02 / 200) = 0.0099; 40 images at 100%: one image, 0.025.
    assert newest_allowance(0.98, 200) == pytest.approx(0.0099, abs=1e-4)
    assert newest_allowance(1.0, 40) == 0.025
    within = decide(side("2", 0.96, 0.971), side("1", 0.95, 0.98), TARGET, MARGIN)
    below = decide(side("2", 0.96, 0.969), side("1", 0.95, 0.98), TARGET, MARGIN)
    assert within.promoted is True and [c.passed for c in within.conditions] == [True, True, True]
    assert within.conditions[2].detail == ("on the 200 newest labelled images the challenger's 0.9710 against the "
                                           "champion's 0.9800 is lower by 0.0090, within their sampling error 0.0099")
    above = decide(side("2", 0.96, 0.99), side("1", 0.95, 0.98), TARGET, MARGIN).conditions[2]
    assert (above.passed, above.detail) == (True, "on the 200 newest labelled images the challenger's 0.9900 against "
                                                  "the champion's 0.9800: not lower")
    assert below.promoted is False and [c.passed for c in below.conditions] == [True, True, False]
    assert below.reason == ("on the 200 newest labelled images the challenger's 0.9690 against the champion's 0.9800 "
                            "is lower by 0.0110, more than their sampling error 0.0099")


def test_without_newest_batches_or_champion_that_condition_does_not_apply():
    verdict = decide(side("2", 0.96), side("1", 0.95), TARGET, MARGIN)
    assert [(c.name, c.passed) for c in verdict.conditions] == [("target", True), ("test_set", True),
                                                                ("newest_batches", None)]
    first = decide(side("1", 0.96, 0.5), None, TARGET, MARGIN)
    assert first.promoted is True and [c.passed for c in first.conditions] == [True, None, None]


def test_tracking_config_is_checked(make_config):
    cfg = make_config()
    assert (cfg.tracking.enabled, cfg.tracking.registered_model, cfg.tracking.uri) == \
        (True, "mnist-digit-classifier", "")
    with pytest.raises(PipelineError, match=r"config key 'tracking.promotion_margin' must be between 0 and 1, got 2"):
        make_config("tracking.promotion_margin=2")
    with pytest.raises(PipelineError, match="unknown config key 'tracking.nosuch'"):
        make_config("tracking.nosuch=1")


def test_the_store_defaults_to_sqlite_under_paths_mlflow(make_config, tmp_path, monkeypatch):
    from pipeline.tracking.store import artifact_location, tracking_uri
    cfg = make_config()
    layout = Layout.from_config(cfg)
    assert tracking_uri(cfg, layout) == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    assert artifact_location(cfg, layout, tracking_uri(cfg, layout)) == f"file://{tmp_path}/mlflow/artifacts"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking_uri(cfg, layout) == "http://127.0.0.1:5999"
    assert artifact_location(cfg, layout, "http://127.0.0.1:5999") is None  # the server chooses
    configured = make_config("tracking.uri=sqlite:////elsewhere/m.db")
    assert tracking_uri(configured, Layout.from_config(configured)) == "sqlite:////elsewhere/m.db"
    remote = make_config("paths.mlflow=hdfs:///mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(PipelineError, match="paths.mlflow 'hdfs:///mlflow' is not a local folder.*set tracking.uri"):
        tracking_uri(remote, Layout.from_config(remote))


def test_connecting_leaves_the_environment_as_it_was(make_config, tmp_path, monkeypatch):
    """MLflow exports the URI it is given; a second config in the same process must still find its own store."""
    from pipeline.tracking.store import connect
    first, second = make_config(), make_config(f"paths.mlflow={tmp_path / 'other'}")
    assert connect(first).uri == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert connect(second).uri == f"sqlite:///{tmp_path}/other/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/env.db")
    assert connect(first).uri == f"sqlite:///{tmp_path}/env.db" == os.environ["MLFLOW_TRACKING_URI"]


@pytest.fixture(scope="module")
def registry(small_mnist_model, tmp_path_factory):
    """Three versions (trained, untrained, trained again) in a store under a temp dir; promotions in order."""
    from pipeline.config import load_config
    from pipeline.tracking import registry as reg
    root = tmp_path_factory.mktemp("registry")
    cfg = load_config(None, "full", [f"paths.mlflow={root / 'mlflow'}", f"paths.runs={root / 'runs'}",
                                     f"tracking.promotion_margin={MARGIN}"])
    versions = [register(cfg, small_mnist_model[kind], name, accuracy) for kind, name, accuracy in
                (("trained", "model_1", 0.95), ("untrained", "model_2", 0.94), ("trained", "model_3", 0.97))]
    before = reg.champion(cfg)
    decisions = []
    for version, accuracy in zip(versions, (0.95, 0.94, 0.97), strict=True):
        reg.set_challenger(cfg, version)
        current = reg.champion(cfg)
        challenger = reg.resolve_model_uri(cfg, f"models:/{cfg.tracking.registered_model}@challenger")
        accuracies = {"1": 0.95, "2": 0.94, "3": 0.97}
        champion = None if current is None else side(current.version, accuracies[current.version])
        decisions.append(reg.promote(cfg, challenger, side(version, accuracy), champion, context="test evaluation"))
    return cfg, versions, before, decisions


def test_first_model_is_promoted_a_worse_one_is_not_a_better_one_is(registry):
    cfg, versions, before, decisions = registry
    assert versions == ["1", "2", "3"] and before is None
    assert [(d.promoted, d.challenger_version, d.champion_version) for d in decisions] == \
        [(True, "1", None), (False, "2", "1"), (True, "3", "1")]
    assert decisions[1].reason == ("challenger test accuracy 0.9400 does not beat the champion's 0.9500 on the same "
                                   "10000 test images (-0.0100; margin 0.0020)")
    assert decisions[2].to_dict()["champion_accuracy"] == 0.95 and decisions[2].target == 0.90


def test_decisions_are_recorded_and_the_replaced_champion_says_so(registry):
    from pipeline.tracking.store import connect
    cfg, _, _, _ = registry
    client, name = connect(cfg).client, cfg.tracking.registered_model
    assert str(client.get_model_version_by_alias(name, "champion").version) == "3"
    assert str(client.get_model_version_by_alias(name, "challenger").version) == "3"
    tags = {v: client.get_model_version(name, v).tags for v in ("1", "2", "3")}
    assert [tags[v]["promotion"] for v in ("1", "2", "3")] == ["promoted", "kept", "promoted"]
    assert tags["1"]["replaced_by"].startswith("version 3 at ") and "replaced_by" not in tags["2"]
    run = client.get_run(client.get_model_version(name, "2").run_id)
    assert run.data.tags["promotion"] == "kept"


def test_a_decision_asked_for_again_is_read_back_not_taken_again(registry):
    """A retried task: the same challenger and context find the recorded decision, whatever evidence they bring and
    wherever the alias is now; nothing moves, nothing is recorded twice."""
    from pipeline.tracking import registry as reg
    from pipeline.tracking.store import connect
    cfg, _, _, decisions = registry
    client, name = connect(cfg).client, cfg.tracking.registered_model
    replaced_by = client.get_model_version(name, "1").tags["replaced_by"]
    challenger = reg.resolve_model_uri(cfg, f"models:/{name}/3")
    again = reg.promote(cfg, challenger, side("3", 0.10), side("3", 0.97), context="test evaluation")
    assert again == decisions[2] and again.promoted is True
    assert str(client.get_model_version_by_alias(name, "champion").version) == "3"
    assert client.get_model_version(name, "1").tags["replaced_by"] == replaced_by
    assert len(client.list_artifacts(challenger.run_id, "promotion")) == 1


def test_a_promotion_stopped_after_its_record_and_before_the_alias_is_completed_by_the_rerun(small_mnist_model,
                                                                                              tmp_path):
    """The process dies at the alias move (the real registry refuses it once): the decision is already on the
    version, the champion has not moved; the rerun, with other evidence, reads the decision back and moves it."""
    from mlflow import MlflowClient

    from pipeline.config import load_config
    from pipeline.tracking import registry as reg
    from pipeline.tracking.store import connect
    cfg = load_config(None, "full", [f"paths.mlflow={tmp_path / 'mlflow'}", f"paths.runs={tmp_path / 'runs'}"])
    first = register(cfg, small_mnist_model["untrained"], "model_1", 0.95)
    reg.set_challenger(cfg, first)
    reg.promote(cfg, reg.resolve_model_uri(cfg, f"models:/{cfg.tracking.registered_model}/{first}"),
                side(first, 0.95), None, context="first")
    second = register(cfg, small_mnist_model["trained"], "model_1", 0.97)
    challenger = reg.resolve_model_uri(cfg, f"models:/{cfg.tracking.registered_model}/{second}")
    client, name = connect(cfg).client, cfg.tracking.registered_model

    def killed(self, *args, **kwargs):
        raise SystemExit("killed at the alias move")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MlflowClient, "set_registered_model_alias", killed)
        with pytest.raises(SystemExit):
            reg.promote(cfg, challenger, side(second, 0.97), side(first, 0.95), context="evaluation")
    tags = client.get_model_version(name, second).tags
    assert tags["promotion"] == "promoted" and "promotion_key" in tags          # the intent is recorded ...
    assert str(client.get_model_version_by_alias(name, "champion").version) == first   # ... the alias not moved
    rerun = reg.promote(cfg, challenger, side(second, 0.10), side(second, 0.97), context="evaluation")
    assert rerun.promoted is True and rerun.champion_version == first and rerun.challenger_accuracy == 0.97
    assert str(client.get_model_version_by_alias(name, "champion").version) == second
    assert client.get_model_version(name, first).tags["replaced_by"].startswith(f"version {second} at ")


def test_resolve_gives_a_fixed_version_and_a_checked_local_model_keras(registry, small_mnist_model):
    from pipeline.tracking.registry import resolve_model_uri
    cfg, _, _, _ = registry
    name = cfg.tracking.registered_model
    by_alias = resolve_model_uri(cfg, f"models:/{name}@champion")
    by_number = resolve_model_uri(cfg, f"models:/{name}/2")
    assert (by_alias.version, by_number.version) == ("3", "2")
    assert by_alias.model_file == f"{Layout.from_config(cfg).registry_cache(name, '3')}/model.keras"
    assert Path(by_alias.model_file).read_bytes() == Path(small_mnist_model["trained"]).read_bytes()
    assert Path(by_number.model_file).read_bytes() == Path(small_mnist_model["untrained"]).read_bytes()


def test_the_logged_version_holds_our_keras_file_and_no_savedmodel_or_hdf5(registry):
    import mlflow
    cfg, _, _, _ = registry
    root = Path(mlflow.artifacts.download_artifacts(f"models:/{cfg.tracking.registered_model}/1"))
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert "data/model.keras" in files and "MLmodel" in files and "input_example.json" in files
    assert not [f for f in files if f.endswith((".h5", ".pb", ".cloudpickle"))], files
    mlmodel = yaml.safe_load((root / "MLmodel").read_text())
    assert mlmodel["artifact_path"].startswith(f"file://{cfg.paths.mlflow}/artifacts/")  # never ./mlruns
    assert mlmodel["flavors"]["tensorflow"]["save_format"] == "keras"
    # Served by our pyfunc (pipeline.tracking.served_model, shipped under code/), which tells its inputs apart.
    assert mlmodel["flavors"]["python_function"]["loader_module"] == "pipeline.tracking.served_model"
    assert "code/pipeline/tracking/served_model.py" in files and "data/serving.json" in files
    assert [spec["name"] for spec in json.loads(mlmodel["signature"]["outputs"])] == ["digit", "confidence",
                                                                                      "probabilities"]
    assert "0-255 integers" in mlmodel["metadata"]["accepts"]


def test_a_corrupt_store_is_one_line_naming_it(make_config, tmp_path):
    """A damaged mlflow.db (a disk error, a copy cut short) gave a 99-line SQLAlchemy traceback."""
    from pipeline.errors import EXIT_NOT_RETRYABLE
    from pipeline.tracking.store import connect
    cfg = make_config()
    db = tmp_path / "mlflow" / "mlflow.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"\x13not a database" * 400)
    with pytest.raises(PipelineError, match=rf"^MLflow tracking store sqlite:///{db}: opening failed: "
                                            r"\(sqlite3.DatabaseError\) file is not a database$"):
        connect(cfg)
    conf = tmp_path / "conf.yaml"
    conf.write_text(yaml.safe_dump({"paths": {"mlflow": str(db.parent), "data": str(tmp_path / "data")}}))
    asked = subprocess.run([sys.executable, "-m", "pipeline.deployment", "--conf", str(conf), "readiness"],
                           capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert asked.returncode == EXIT_NOT_RETRYABLE
    assert asked.stderr.strip().splitlines() == [
        f"ERROR [deployment]: MLflow tracking store sqlite:///{db}: opening failed: (sqlite3.DatabaseError) file is "
        "not a database"]


def test_logging_a_model_prints_no_keras_progress_bar(make_config, small_mnist_model, capfd):
    """MLflow checks the input example with model.predict; in a job's log that is a progress bar per model."""
    from tensorflow import keras
    cfg = make_config()
    assert keras.utils.is_interactive_logging_enabled()
    register(cfg, small_mnist_model["trained"], "model_1", 0.95)
    printed = capfd.readouterr()
    assert "step" not in printed.out + printed.err and "[====" not in printed.out, printed
    assert keras.utils.is_interactive_logging_enabled()  # restored for the rest of the process


@pytest.mark.parametrize(("uri", "message"), [
    ("models:/mnist-digit-classifier@nosuch", "registered model 'mnist-digit-classifier' has no alias 'nosuch' "
                                              r"\(aliases: challenger, champion\) in MLflow store sqlite:///"),
    ("models:/mnist-digit-classifier/9", "registered model 'mnist-digit-classifier' has no version 9"),
    ("models:/other@champion", "no registered model 'other' in MLflow store"),
    ("models:/mnist-digit-classifier", "model 'models:/mnist-digit-classifier' is not a registry URI: "
                                       "models:/<name>@<alias> or models:/<name>/<version>"),
])
def test_a_missing_alias_version_or_model_is_one_line(registry, uri, message):
    from pipeline.tracking.registry import resolve_model_uri
    cfg, _, _, _ = registry
    with pytest.raises(PipelineError, match=message):
        resolve_model_uri(cfg, uri)


def test_registry_uris_need_tracking_on(make_config):
    from pipeline.tracking.registry import resolve_model_uri
    with pytest.raises(PipelineError, match=r"registry models need tracking.enabled \(it is false\)"):
        resolve_model_uri(make_config("tracking.enabled=false"), "models:/m@champion")


def test_predict_by_alias_scores_with_that_version_and_writes_it_in_every_row(spark, registry,
                                                                              small_curated_test_set, tmp_path):
    import dataclasses

    from pipeline.predict.stage import run_prediction
    cfg, _, _, _ = registry
    cfg = dataclasses.replace(cfg, paths=dataclasses.replace(cfg.paths, runs=str(tmp_path / "runs")))
    out = tmp_path / "scored"
    summary = run_prediction(spark, cfg, Layout.from_config(cfg, "run"), input_path=small_curated_test_set,
                             model=f"models:/{cfg.tracking.registered_model}@champion", output=str(out)).details
    assert (summary["model"], summary["model_version"], summary["count"]) == ("mnist-digit-classifier", "3", 1000)
    predictions = spark.read.parquet(str(out / "predictions.parquet"))
    assert predictions.groupBy("model_version").count().collect() == [("3", 1000)]
    assert summary["accuracy"] > 0.8  # version 3 is the trained model


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_version_without_our_keras_file_is_refused(registry, small_mnist_model):
    """A version logged by hand in MLflow's default format (a SavedModel folder, which can run code) never loads."""
    import mlflow

    from pipeline.model_files import load_keras_model
    from pipeline.tracking.registry import resolve_model_uri
    from pipeline.tracking.store import connect
    cfg, _, _, _ = registry
    store = connect(cfg)
    run = store.client.create_run(store.experiment_id)
    with mlflow.start_run(run_id=run.info.run_id):
        mlflow.tensorflow.log_model(load_keras_model(small_mnist_model["trained"]), name="model",
                                    registered_model_name="handmade", pip_requirements=[])
    with pytest.raises(PipelineError, match="registered model 'handmade' version 1 holds no data/model.keras: only "
                                            "versions logged by this pipeline"):
        resolve_model_uri(cfg, "models:/handmade/1")


@pytest.mark.slow
def test_the_ui_serves_the_local_store_on_loopback(registry):
    """What `make mlflow-ui` runs: the REST API answers on 127.0.0.1 and lists the pipeline's experiment."""
    cfg, _, _, _ = registry
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    server = subprocess.Popen([sys.executable, "-m", "pipeline.tracking.ui", "--port", str(port),
                               "--set", f"paths.mlflow={cfg.paths.mlflow}"], env=env, start_new_session=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=10"
        body = wait_for_json(url, server)
        assert cfg.tracking.experiment in [e["name"] for e in body["experiments"]]
        listening = {c.laddr.ip for c in __import__("psutil").net_connections("tcp")
                     if c.status == "LISTEN" and c.laddr.port == port}
        assert listening == {"127.0.0.1"}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def wait_for_json(url: str, server: subprocess.Popen, timeout: float = 90) -> dict:
    """The JSON at `url` once the server answers; fails at once if the server exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the MLflow server exited with {server.returncode}: {server.stdout.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            time.sleep(0.5)  # polling a port that is not open yet: no event to wait on
    pytest.fail(f"no answer from {url} within {timeout} s")


def test_a_retraining_decision_is_logged_once_to_its_run(make_config, tmp_path):
    from pipeline.tracking.runs import log_retraining
    from pipeline.tracking.store import connect
    cfg = make_config(f"paths.mlflow={tmp_path / 'mlflow'}")
    decision = {"ds": "2026-11-24", "run_id": "retrain-2026-11-24-x", "promoted": False, "reason": "kept",
                "challenger": {"test_accuracy": 0.97, "newest_batches_accuracy": 0.91},
                "champion": {"test_accuracy": 0.98, "newest_batches_accuracy": 0.93}}
    run_id = log_retraining(cfg, decision)
    assert log_retraining(cfg, decision) == run_id  # a retried task logs into the same run, nothing twice
    client = connect(cfg).client
    run = client.get_run(run_id)
    assert run.data.metrics == {"challenger_test_accuracy": 0.97, "challenger_newest_batches_accuracy": 0.91,
                                "champion_test_accuracy": 0.98, "champion_newest_batches_accuracy": 0.93}
    assert len(client.get_metric_history(run_id, "champion_newest_batches_accuracy")) == 1
    assert run.data.tags["pipeline.retraining.promoted"] == "false"
    assert [a.path for a in client.list_artifacts(run_id, "retraining")] == ["retraining/decision.json"]


def test_the_package_served_with_a_version_is_copied_alike_from_a_folder_or_the_spark_submit_zip(tmp_path):
    """spark-submit ships the package as dist/pipeline.zip (--py-files): the version's code/ must not need a folder."""
    import zipfile

    from pipeline.tracking.model_log import PACKAGE_DIR, copy_package
    archive = tmp_path / "dist" / "pipeline.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as bundle:  # as `make dist` builds it
        for path in Path(PACKAGE_DIR).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                bundle.write(path, Path("pipeline") / path.relative_to(PACKAGE_DIR))
    copy_package(str(tmp_path / "from-folder"))
    copy_package(str(tmp_path / "from-zip"), f"{archive}/pipeline")
    files = {p.relative_to(tmp_path / "from-folder"): p.read_bytes()
             for p in (tmp_path / "from-folder").rglob("*") if p.is_file()}
    assert Path("tracking/served_model.py") in files and not [p for p in files if p.suffix == ".pyc"]
    assert {p.relative_to(tmp_path / "from-zip"): p.read_bytes()
            for p in (tmp_path / "from-zip").rglob("*") if p.is_file()} == files
    with pytest.raises(FileNotFoundError, match="neither a folder nor in a zip archive"):
        copy_package(str(tmp_path / "nowhere"), str(tmp_path / "missing" / "pipeline"))
