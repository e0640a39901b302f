import subprocess
import sys

import pytest

from pipeline.config import REPO_ROOT, load_config
from pipeline.errors import PipelineError

LOCAL = REPO_ROOT / "conf" / "local.yaml"


def test_local_config_has_the_seed_epochs():
    cfg = load_config(LOCAL)
    assert {name: m.epochs for name, m in cfg.train.models.items()} == {"model_1": 5, "model_2": 10, "model_3": 12}
    assert cfg.spark.master == "local[*]"
    assert cfg.evaluate.target_accuracy == 0.90


def test_cluster_template_loads():
    cfg = load_config(REPO_ROOT / "conf" / "cluster.yaml")
    assert cfg.paths.data.startswith("hdfs://")
    assert cfg.resolve(cfg.paths.data) == cfg.paths.data


def test_overrides_are_typed():
    cfg = load_config(LOCAL, overrides=["train.batch_size=64", "prepare.validation_size=0.1",
                                        "train.models.model_1.epochs=2"])
    assert cfg.train.batch_size == 64
    assert cfg.prepare.validation_size == pytest.approx(0.1)
    assert cfg.train.models["model_1"].epochs == 2


def test_quick_profile_overlays_the_file():
    cfg = load_config(LOCAL, profile="quick")
    assert cfg.profile == "quick"
    assert cfg.prepare.subset_fraction < 1
    full = load_config(LOCAL, profile="full")
    assert {name: m.epochs for name, m in cfg.train.models.items()} == {"model_1": 2, "model_2": 2, "model_3": 6}
    assert all(m.epochs < full.train.models[name].epochs for name, m in cfg.train.models.items())
    assert cfg.evaluate.target_accuracy == 0.90


@pytest.mark.parametrize("override, key", [("nosuch.key=1", "nosuch.key"), ("train.nosuch=1", "train.nosuch"),
                                           ("train.models.model_1.nosuch=1", "train.models.model_1.nosuch")])
def test_unknown_key_is_named(override, key):
    with pytest.raises(PipelineError, match=f"unknown config key '{key}'"):
        load_config(LOCAL, overrides=[override])


def test_wrong_type_is_named():
    with pytest.raises(PipelineError, match="config key 'train.batch_size' must be int, got 'big'"):
        load_config(LOCAL, overrides=["train.batch_size=big"])


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(PipelineError, match="unknown profile 'huge'.*full, quick"):
        load_config(LOCAL, profile="huge")


def test_section_hash_changes_with_the_section_only():
    a, b = load_config(LOCAL), load_config(LOCAL, overrides=["train.batch_size=64"])
    assert a.section_hash("data", "prepare") == b.section_hash("data", "prepare")
    assert a.section_hash("train") != b.section_hash("train")


def test_job_with_unknown_key_exits_with_one_line():
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "jobs" / "ingest.py"), "--conf", str(LOCAL),
                           "--set", "nosuch.key=1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == "ERROR [ingest]: unknown config key 'nosuch.key'"


def test_missing_java_gives_one_clear_line(tmp_path):
    env = {"PATH": "/usr/bin/nonexistent", "JAVA_HOME": str(tmp_path / "nojdk"), "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "jobs" / "ingest.py")], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode != 0
    assert "has no bin/java: install a JDK 17" in proc.stderr.strip().splitlines()[-1]
