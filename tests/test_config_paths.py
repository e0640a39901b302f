"""Where config looks for things: profiles beside the config file, relative paths under one base (`paths.root`),
never the working directory, whether the package comes from the checkout or from dist/pipeline.zip."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.config import REPO_ROOT, load_config
from pipeline.errors import EXIT_NOT_RETRYABLE, PipelineError
from pipeline.layout import Layout

LOCAL = REPO_ROOT / "conf" / "local.yaml"


@pytest.fixture
def site(tmp_path) -> Path:
    """A deployment outside the checkout: site/conf/app.yaml with its own profile, site/conf/profiles/tiny.yaml."""
    conf = tmp_path / "site" / "conf"
    (conf / "profiles").mkdir(parents=True)
    (conf / "app.yaml").write_text("paths:\n  input: incoming\n  data: out/data\ntrain: {batch_size: 16}\n")
    (conf / "profiles" / "tiny.yaml").write_text("train: {batch_size: 7}\n")
    return tmp_path / "site"


def test_profile_is_read_beside_the_config_file(site):
    assert load_config(site / "conf" / "app.yaml", "tiny").train.batch_size == 7
    with pytest.raises(PipelineError, match=f"^unknown profile 'quick' \\(known in "
                                            f"{re.escape(str(site / 'conf' / 'profiles'))}: tiny\\)$"):
        load_config(site / "conf" / "app.yaml", "quick")  # the checkout's profile is not this file's


def test_default_profile_without_a_file_is_the_config_as_it_is(tmp_path):
    (tmp_path / "app.yaml").write_text("train: {batch_size: 16}\n")
    cfg = load_config(tmp_path / "app.yaml")
    assert (cfg.profile, cfg.train.batch_size) == ("full", 16)
    with pytest.raises(PipelineError, match=f"^unknown profile 'quick' \\(known in "
                                            f"{re.escape(str(tmp_path / 'profiles'))}: none\\)$"):
        load_config(tmp_path / "app.yaml", "quick")


def test_relative_paths_resolve_under_the_folder_above_the_config_files_folder(site):
    cfg = load_config(site / "conf" / "app.yaml", overrides=["paths.runs=elsewhere/runs"])
    assert cfg.paths.root == str(site)
    assert cfg.resolve(cfg.paths.input) == f"{site}/incoming"
    assert cfg.resolve(cfg.paths.data) == f"{site}/out/data"
    assert cfg.resolve(cfg.paths.runs) == f"{site}/elsewhere/runs"   # a --set value: the same base
    assert cfg.resolve(cfg.paths.batches) == f"{site}/output/batches"  # a default: the same base
    assert Layout.from_config(cfg, "r1").run_root == f"{site}/elsewhere/runs/r1"


@pytest.mark.parametrize(("root", "expected"), [
    ("/srv/mnist", "/srv/mnist/out/data"),
    ("../shared", "{tmp}/shared/out/data"),                 # relative: from the folder above conf/
    ("hdfs://nn:8020/user/mnist/", "hdfs://nn:8020/user/mnist/out/data"),
])
def test_paths_root_sets_the_base(site, root, expected):
    cfg = load_config(site / "conf" / "app.yaml", overrides=[f"paths.root={root}"])
    assert cfg.resolve(cfg.paths.data) == expected.format(tmp=site.parent)


@pytest.mark.parametrize("path", ["s3a://bucket/mnist/data", "file:///data/mnist", "/abs/data"])
def test_uris_and_absolute_paths_are_untouched(site, path):
    for root in ("''", "/srv/mnist", "hdfs:///user/mnist"):
        cfg = load_config(site / "conf" / "app.yaml", overrides=[f"paths.root={root}", f"paths.data={path}"])
        assert cfg.resolve(cfg.paths.data) == path


def test_the_working_directory_plays_no_part(site, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, "quick")                          # no file: the checkout's conf/ and base
    assert (cfg.paths.root, cfg.prepare.subset_fraction) == (str(REPO_ROOT), 0.1)
    assert load_config(LOCAL).resolve("data/mnist") == f"{REPO_ROOT}/data/mnist"
    monkeypatch.chdir(site)                                   # a relative --conf is a command-line path: from cwd
    assert load_config("conf/app.yaml", "tiny").paths.root == str(site)


def test_conf_zip_serves_a_driver_in_cluster_deploy_mode(dist, tmp_path, monkeypatch):
    """--archives dist/conf.zip#conf unpacks into the driver's container; --conf conf/cluster.yaml then finds its
    profiles, and its relative paths resolve in the container."""
    with zipfile.ZipFile(dist.parent / "conf.zip") as archive:
        archive.extractall(tmp_path / "container" / "conf")
    monkeypatch.chdir(tmp_path / "container")
    cfg = load_config("conf/cluster.yaml", "quick")
    assert (cfg.profile, cfg.prepare.subset_fraction, cfg.paths.data) == ("quick", 0.1, "hdfs:///user/mnist/data")
    assert cfg.resolve("relative") == f"{tmp_path}/container/relative"


def _python(args: list[str], zip_path: Path, cwd: Path) -> subprocess.CompletedProcess:
    """`python args` with the package taken from `zip_path` only, as spark-submit --py-files gives it."""
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONPATH": str(zip_path)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_package_from_dist_zip_knows_its_checkout(dist, tmp_path):
    proc = _python(["-c", "import pipeline.config as c; print(c.__file__); print(c.REPO_ROOT)"], dist, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"{dist}/pipeline/config/__init__.py", str(REPO_ROOT)]


def test_job_outside_a_checkout_without_conf_says_so(dist, tmp_path):
    (tmp_path / "loose").mkdir()
    shutil.copy(dist, tmp_path / "loose" / "pipeline.zip")
    proc = _python([str(REPO_ROOT / "jobs" / "ingest.py")], tmp_path / "loose" / "pipeline.zip", tmp_path)
    assert proc.returncode == EXIT_NOT_RETRYABLE
    assert proc.stderr.strip().splitlines()[-1] == (
        f"ERROR [ingest]: no --conf given and {tmp_path}/conf/local.yaml does not exist (the pipeline package is "
        "not in a checkout): pass --conf FILE")


def _tiny_npz(path: Path) -> None:
    rng = np.random.default_rng(3)
    path.parent.mkdir(parents=True)
    np.savez(path, x_train=rng.integers(1, 256, (30, 28, 28), dtype=np.uint8), y_train=np.arange(30) % 10,
             x_test=rng.integers(1, 256, (10, 28, 28), dtype=np.uint8), y_test=np.arange(10) % 10)


@pytest.mark.slow
def test_spark_submit_from_another_directory(dist, site, tmp_path):
    """The issue's command from a foreign working directory: the package from the zip, the profile beside the
    config file, a --set relative input and the outputs under the config's base, nothing in the working dir."""
    _tiny_npz(site / "tiny" / "mnist.npz")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
           "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    argv = [str(Path(sys.executable).parent / "spark-submit"), "--master", "local[1]", "--py-files", str(dist),
            str(REPO_ROOT / "jobs" / "ingest.py"), "--conf", str(site / "conf" / "app.yaml"), "--profile", "tiny",
            "--set", "paths.input=tiny", "--set", "spark.master=local[1]", "--set", f"spark.settings.spark.local.dir="
            f"{tmp_path / 'spark-local'}"]
    proc = subprocess.run(argv, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    raw = list((site / "out" / "data").glob("ingest-*/raw"))
    assert len(raw) == 1, f"no raw table under {site / 'out' / 'data'}"
    assert pq.read_table(raw[0]).num_rows == 40
    assert list(elsewhere.iterdir()) == []
