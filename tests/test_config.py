import dataclasses
import importlib
import re
import subprocess
import sys
import typing

import pytest

from pipeline.config import REPO_ROOT, PipelineConfig, load_config, profiles_dir
from pipeline.errors import EXIT_NOT_RETRYABLE, PipelineError

LOCAL = REPO_ROOT / "conf" / "local.yaml"


def test_local_config_has_the_seed_epochs():
    cfg = load_config(LOCAL)
    assert {name: m.epochs for name, m in cfg.train.models.items()} == {"model_1": 5, "model_2": 10, "model_3": 12,
                                                                       "model_4": 25}
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
    assert {name: m.epochs for name, m in cfg.train.models.items()} == {"model_1": 2, "model_2": 2, "model_3": 6,
                                                                       "model_4": 3}
    assert all(m.epochs < full.train.models[name].epochs for name, m in cfg.train.models.items())
    assert cfg.evaluate.target_accuracy == 0.90


def test_model_4_has_its_own_recipe_and_the_study_models_keep_theirs():
    """The quick profile shortens model_4 and keeps the rest of its recipe (profiles merge key by key)."""
    for profile in ("full", "quick"):
        models = load_config(LOCAL, profile=profile).train.models
        m4 = models["model_4"]
        assert (m4.keep, m4.augment, m4.schedule, m4.batch_size, m4.learning_rate) == \
            ("best", True, "cosine", 128, 0.002)
        assert {(m.keep, m.augment, m.schedule, m.batch_size, m.learning_rate)
                for name, m in models.items() if name != "model_4"} == {("last", False, "constant", 0, 0.0)}


def test_recipe_keys_override_by_model():
    cfg = load_config(LOCAL, overrides=["train.models.model_4.augment=false", "train.models.model_4.schedule=constant",
                                        "train.models.model_3.keep=best", "train.models.model_3.batch_size=128",
                                        "train.models.model_3.learning_rate=0.002"])
    m3, m4 = cfg.train.models["model_3"], cfg.train.models["model_4"]
    assert (m4.augment, m4.schedule, m3.keep, m3.batch_size, m3.learning_rate) == (False, "constant", "best", 128,
                                                                                   0.002)


@pytest.mark.parametrize("override, key", [("nosuch.key=1", "nosuch.key"), ("train.nosuch=1", "train.nosuch"),
                                           ("train.models.model_1.nosuch=1", "train.models.model_1.nosuch")])
def test_unknown_key_is_named(override, key):
    with pytest.raises(PipelineError, match=f"unknown config key '{key}'"):
        load_config(LOCAL, overrides=[override])


@pytest.mark.parametrize("key", ["data.image_height", "data.image_width", "data.num_classes", "paths.store"])
def test_keys_nothing_could_honour_are_refused(key):
    """The image shape and class count are declared in pipeline.schema (the models are built for them), and no
    stage has a store path to use: a config setting them would be silently ignored, so it is refused."""
    with pytest.raises(PipelineError, match=f"^unknown config key '{re.escape(key)}'$"):
        load_config(LOCAL, overrides=[f"{key}=32"])


def test_wrong_type_is_named():
    with pytest.raises(PipelineError, match="config key 'train.batch_size' must be int, got 'big'"):
        load_config(LOCAL, overrides=["train.batch_size=big"])


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=0", "config key 'train.batch_size' must be between 1 and 65536, got 0"),
    ("train.batch_size=-5", "config key 'train.batch_size' must be between 1 and 65536, got -5"),
    ("data.records_per_partition=0", "config key 'data.records_per_partition' must be between 1 and 10000000, got 0"),
    ("data.max_quarantine_fraction=1.5", "config key 'data.max_quarantine_fraction' must be between 0 and 1, got 1.5"),
    ("spark.shuffle_partitions=0", "config key 'spark.shuffle_partitions' must be between 1 and 100000, got 0"),
    ("prepare.seed=-1", "config key 'prepare.seed' must be between 0 and 2147483647, got -1"),
    ("prepare.subset_fraction=0", "config key 'prepare.subset_fraction' must be in (0, 1], got 0.0"),
    ("prepare.subset_fraction=1.1", "config key 'prepare.subset_fraction' must be in (0, 1], got 1.1"),
    ("prepare.validation_size=2.5", "config key 'prepare.validation_size' must be a fraction in (0, 1) or a whole "
                                    "count between 1 and 10000000, got 2.5"),
    ("prepare.validation_size=0", "config key 'prepare.validation_size' must be a fraction in (0, 1) or a whole "
                                  "count between 1 and 10000000, got 0.0"),
    ("eda.histogram_bins=0", "config key 'eda.histogram_bins' must be between 1 and 256, got 0"),
    ("train.models.model_1.epochs=0", "config key 'train.models.model_1.epochs' must be between 1 and 10000, got 0"),
    ("train.models.model_4.keep=first",
     "config key 'train.models.model_4.keep' must be one of last, best, got 'first'"),
    ("train.models.model_4.schedule=step",
     "config key 'train.models.model_4.schedule' must be one of constant, cosine, got 'step'"),
    ("train.models.model_4.batch_size=-1",
     "config key 'train.models.model_4.batch_size' must be between 0 and 65536, got -1"),
    ("train.models.model_4.batch_size=70000",
     "config key 'train.models.model_4.batch_size' must be between 0 and 65536, got 70000"),
    ("train.models.model_4.learning_rate=-0.1",
     "config key 'train.models.model_4.learning_rate' must be between 0 and 10, got -0.1"),
    ("train.learning_rate=0", "config key 'train.learning_rate' must be in (0, 10], got 0.0"),
    ("train.learning_rate=.nan", "config key 'train.learning_rate' must be in (0, 10], got nan"),
    ("evaluate.target_accuracy=1.5", "config key 'evaluate.target_accuracy' must be between 0 and 1, got 1.5"),
    ("predict.max_image_pixels=0", "config key 'predict.max_image_pixels' must be between 1 and 2147483647, got 0"),
    ("report.reference_val_accuracy.model_1=2",
     "config key 'report.reference_val_accuracy.model_1' must be between 0 and 1, got 2.0"),
    ("data.format=parquet", "config key 'data.format' must be one of auto, idx, npz, csv, got 'parquet'"),
    ("data.blank_images=keep",
     "config key 'data.blank_images' must be one of fail, warn, quarantine, drop, got 'keep'"),
    ("data.test_images_in_train=ignore",
     "config key 'data.test_images_in_train' must be one of fail, warn, quarantine, drop, got 'ignore'"),
    ("spark.log_level=loud",
     "config key 'spark.log_level' must be one of ALL, DEBUG, ERROR, FATAL, INFO, OFF, TRACE, WARN, got 'loud'"),
    ("tracking.registered_model=../../elsewhere",   # a folder name: the registry cache's
     "config key 'tracking.registered_model' must be a plain name (letters, digits, '.', '_', '-'), got "
     "'../../elsewhere'"),
    ("tracking.registered_model=..",
     "config key 'tracking.registered_model' must be a plain name (letters, digits, '.', '_', '-'), got '..'"),
])
def test_value_out_of_range_names_the_key_and_the_range(override, message):
    with pytest.raises(PipelineError, match=f"^{re.escape(message)}$"):
        load_config(LOCAL, overrides=[override])


def test_values_at_the_ends_of_their_ranges_load():
    cfg = load_config(LOCAL, overrides=[
        "train.batch_size=1", "prepare.subset_fraction=1", "prepare.validation_size=0.5", "evaluate.target_accuracy=0",
        "train.num_workers=0", "spark.log_level=warn", "data.format=csv", "train.models.model_1.epochs=10000"])
    assert (cfg.train.batch_size, cfg.prepare.subset_fraction, cfg.prepare.validation_size) == (1, 1.0, 0.5)
    assert (cfg.evaluate.target_accuracy, cfg.spark.log_level, cfg.train.models["model_1"].epochs) == (0.0, "warn",
                                                                                                        10000)


def _numeric_fields(cls: type, prefix: str = ""):
    """(dotted key, field) of every int or float field, in mappings too, below dataclass `cls`."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        value_type = typing.get_args(hint)[1] if typing.get_origin(hint) is dict else hint
        if dataclasses.is_dataclass(value_type):
            yield from _numeric_fields(value_type, f"{prefix}{f.name}.")
        elif value_type in (int, float):
            yield f"{prefix}{f.name}", f


def test_every_numeric_key_declares_its_range():
    keys = dict(_numeric_fields(PipelineConfig))
    assert "train.models.epochs" in keys and "predict.max_image_pixels" in keys
    assert [key for key, f in keys.items() if "allowed" not in f.metadata] == []


@pytest.mark.parametrize("conf", ["local.yaml", "cluster.yaml", "cluster-local.yaml"])
@pytest.mark.parametrize("profile", ["full", "quick", "test"])
def test_shipped_configs_are_within_range(conf, profile):
    assert load_config(REPO_ROOT / "conf" / conf, profile).profile == profile


@pytest.mark.parametrize("override, message", [
    ("train.batch_size=true", "config key 'train.batch_size' must be int, got True"),
    ("evaluate.target_accuracy=false", "config key 'evaluate.target_accuracy' must be float, got False"),
    ("train.models=[1, 2]", "config key 'train.models' must be a mapping, got [1, 2]"),
    ("spark.settings=[a]", "config key 'spark.settings' must be a mapping, got ['a']"),
    ("train=[1]", "config key 'train' must be a mapping, got [1]"),
    ("train.models.model_1=5", "config key 'train.models.model_1' must be a mapping, got 5"),
    ("train.models.model_9={}", "config key 'train.models.model_9.epochs' is required"),
    ("train.models.model_4.augment=maybe", "config key 'train.models.model_4.augment' must be bool, got 'maybe'"),
    ("train.models.model_4.keep=1", "config key 'train.models.model_4.keep' must be one of last, best, got '1'"),
])
def test_wrong_type_is_one_line_naming_the_key(override, message):
    with pytest.raises(PipelineError, match=f"^{re.escape(message)}$"):
        load_config(LOCAL, overrides=[override])


def test_set_value_that_is_not_yaml_is_one_line():
    with pytest.raises(PipelineError, match=r"^--set train\.batch_size: value '\[1' is not valid YAML \(quote it\)$"):
        load_config(LOCAL, overrides=["train.batch_size=[1"])


def test_conf_directory_is_refused(tmp_path):
    with pytest.raises(PipelineError, match=f"^config file {re.escape(str(tmp_path))} is not a file$"):
        load_config(tmp_path)


def test_unreadable_conf_is_one_line(tmp_path, monkeypatch):
    conf = tmp_path / "conf.yaml"
    conf.write_text("train: {batch_size: 8}\n")

    def denied(self, *args, **kwargs):  # chmod cannot stop root, who may run these tests
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(type(conf), "read_text", denied)
    with pytest.raises(PipelineError, match=f"^config file {re.escape(str(conf))} cannot be read: Permission denied$"):
        load_config(conf)


def test_conf_that_is_not_text_is_one_line(tmp_path):
    conf = tmp_path / "conf.yaml"
    conf.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(PipelineError, match=f"^config file {re.escape(str(conf))} is not UTF-8 text$"):
        load_config(conf)


KNOWN_PROFILES = re.escape(f"(known in {REPO_ROOT / 'conf' / 'profiles'}: full, quick, test)")


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(PipelineError, match=f"^unknown profile 'huge' {KNOWN_PROFILES}$"):
        load_config(LOCAL, profile="huge")


@pytest.mark.parametrize("profile", ["../profiles/quick", "quick.yaml", "/etc/hostname", "..", "quick/", "QUICK "])
def test_profile_is_a_plain_name_from_the_profiles_folder(profile):
    with pytest.raises(PipelineError, match=f"^unknown profile '{re.escape(profile)}' {KNOWN_PROFILES}$"):
        load_config(LOCAL, profile=profile)


def test_profile_outside_the_profiles_folder_is_not_loaded(tmp_path):
    profiles = profiles_dir(LOCAL)
    (tmp_path / "evil.yaml").write_text("train: {batch_size: 7}\n")
    relative = "../" * len(profiles.parts[1:]) + str(tmp_path / "evil").lstrip("/")  # up to /, then down
    assert (profiles / f"{relative}.yaml").resolve() == tmp_path / "evil.yaml"
    with pytest.raises(PipelineError, match=f"^unknown profile '.*evil' {KNOWN_PROFILES}$"):
        load_config(LOCAL, profile=relative)
    conf = tmp_path / "conf.yaml"   # its profiles folder would be tmp_path/profiles: the name is refused all the same
    conf.write_text(f"profile: {relative}\n")
    refused = f"^unknown profile '.*evil' \\(known in {re.escape(str(tmp_path))}/profiles: none\\)$"
    with pytest.raises(PipelineError, match=refused):
        load_config(conf)


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


def test_spark_option_with_dots_is_one_settings_key():
    cfg = load_config(REPO_ROOT / "conf" / "cluster-local.yaml", overrides=[
        "spark.settings.spark.hadoop.fs.s3a.endpoint=http://127.0.0.1:9000", "spark.settings.spark.executor.cores=2"])
    assert cfg.spark.settings["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert cfg.spark.settings["spark.executor.cores"] == "2"  # the override wins over the file's "1"
    assert cfg.spark.settings["spark.task.cpus"] == "1"       # the file's other settings stay
    assert "spark" not in cfg.spark.settings


SECRET_SETTINGS = {"spark.hadoop.fs.s3a.secret.key": "s3-secret-value", "spark.hadoop.fs.s3a.access.key": "AKIAEXAMPLE",
                   "spark.hadoop.fs.s3a.session.token": "session-token-value", "spark.ssl.keyPassword": "ssl-pass",
                   "spark.hadoop.fs.azure.account.key.acct.blob.core.windows.net": "azure-key-value",
                   "spark.hadoop.google.cloud.auth.service.account.private.key": "gcs-private-key",
                   "spark.authenticate.secret": "auth-secret", "x.ApiKey": "api-key-value",
                   "x.CREDENTIALS": "cred-value", "x.accessKey": "access-key-value", "x.db.passwd": "passwd-value"}


def test_redacted_dict_hides_secret_looking_keys_and_keeps_the_rest(make_config):
    from pipeline.redaction import REDACTED
    cfg = make_config(*[f"spark.settings.{k}={v}" for k, v in SECRET_SETTINGS.items()],
                      "spark.settings.spark.hadoop.fs.s3a.endpoint=http://127.0.0.1:9000")
    redacted = cfg.to_redacted_dict()
    assert redacted["spark"]["settings"] == {**dict.fromkeys(SECRET_SETTINGS, REDACTED),
                                             "spark.hadoop.fs.s3a.endpoint": "http://127.0.0.1:9000"}
    assert redacted["train"] == cfg.to_dict()["train"]
    assert cfg.spark.settings["spark.hadoop.fs.s3a.secret.key"] == "s3-secret-value"  # the session still gets it


def test_section_hash_still_hashes_the_real_secret_values(make_config):
    a = make_config("spark.settings.spark.hadoop.fs.s3a.secret.key=one")
    b = make_config("spark.settings.spark.hadoop.fs.s3a.secret.key=two")
    assert a.section_hash("spark") != b.section_hash("spark")
    assert a.to_redacted_dict() == b.to_redacted_dict()


def test_run_manifest_holds_no_secret_value(make_config, monkeypatch):
    from pipeline.layout import Layout
    from pipeline.result import StageResult
    from pipeline.run import run_pipeline
    from pipeline.stages import Stage
    # A stage's result naming its input, as predict's does: paths end up outside the config section too, and
    # although the config refuses a password in a URI (tests/test_secrets.py), what is written is redacted anyway.
    input_uri = "s3a://reader:wJalr/K7MDENG+bPxRfi@bucket/mnist"
    monkeypatch.setattr(Stage, "run", lambda self, *args, **kwargs: StageResult(False, {"input": input_uri}))
    cfg = make_config(*[f"spark.settings.{k}={v}" for k, v in SECRET_SETTINGS.items()],
                      "spark.settings.spark.hadoop.fs.s3a.endpoint=http://127.0.0.1:9000")
    layout = Layout.from_config(cfg)
    run_pipeline(None, cfg, layout)
    written = open(layout.run_manifest).read()
    assert [value for value in SECRET_SETTINGS.values() if value in written] == []
    assert "wJalr/K7MDENG+bPxRfi" not in written and "s3a://reader:***redacted***@bucket/mnist" in written
    assert "http://127.0.0.1:9000" in written and '"batch_size": 32' in written


@pytest.mark.parametrize("job, argv, message", [
    ("ingest", ["--set", "train.batch_size=0"], "config key 'train.batch_size' must be between 1 and 65536, got 0"),
    ("train", ["--set", "train.batch_size=true"], "config key 'train.batch_size' must be int, got True"),
    ("prepare", ["--set", "prepare.subset_fraction=0"],
     "config key 'prepare.subset_fraction' must be in (0, 1], got 0.0"),
    ("predict", ["--profile", "../profiles/quick"], "unknown profile '../profiles/quick' "
     f"(known in {REPO_ROOT / 'conf' / 'profiles'}: full, quick, test)"),
    ("run_pipeline", ["--conf", str(REPO_ROOT / "conf")], f"config file {REPO_ROOT / 'conf'} is not a file"),
])
def test_job_config_error_is_one_error_line_and_not_retryable(job, argv, message, capsys):
    main = importlib.import_module(f"jobs.{job}")._main
    assert main(argv) == EXIT_NOT_RETRYABLE  # a scheduler fails the task at once: a retry cannot fix a config
    stage = "pipeline" if job == "run_pipeline" else job
    assert capsys.readouterr().err.splitlines() == [f"ERROR [{stage}]: {message}"]


def test_the_configuration_reference_is_the_config_itself_and_every_key_has_a_meaning():
    """docs/configuration-reference.md is generated (make config-reference): a key added, renamed, given another
    default or range, or left without a comment beside or above it fails here."""
    from pipeline.config_reference import reference_markdown, sections
    keys = [key for _, _, section in sections() for key in section]
    assert [key.key for key in keys if not key.meaning] == []
    assert {key.key.split(".")[0] for key in keys} == {f.name for f in dataclasses.fields(PipelineConfig)}
    committed = (REPO_ROOT / "docs" / "configuration-reference.md").read_text()
    assert committed == reference_markdown(), "docs/configuration-reference.md is stale: run make config-reference"


def test_a_key_that_moved_is_read_under_its_old_name_with_one_warning(tmp_path, caplog):
    """predict.image_decode_batch_size and drift.low_confidence_examples are the scheduled days' (batch.*): a config
    file or a --set with the old name still works until the next release, and says so in one line each."""
    conf = tmp_path / "conf.yaml"
    conf.write_text("predict: {image_decode_batch_size: 32, batch_size: 256}\n")
    with caplog.at_level("WARNING", logger="pipeline.config"):
        cfg = load_config(conf, overrides=["drift.low_confidence_examples=7"])
    assert cfg.batch.image_decode_batch_size == 32 and cfg.batch.low_confidence_examples == 7
    assert cfg.predict.batch_size == 256  # the section's other keys stay where they are
    assert [r.getMessage() for r in caplog.records] == [
        "config key 'predict.image_decode_batch_size' is now 'batch.image_decode_batch_size': rename it (the old "
        "name is read until the next release)",
        "config key 'drift.low_confidence_examples' is now 'batch.low_confidence_examples': rename it (the old name "
        "is read until the next release)"]
    with pytest.raises(PipelineError, match=r"^config keys 'predict.image_decode_batch_size' and "
                                            r"'batch.image_decode_batch_size' are both set: .* keep only the new one$"):
        load_config(conf, overrides=["batch.image_decode_batch_size=16"])
    with pytest.raises(PipelineError, match=r"^config key 'batch.low_confidence_examples' must be between 0 and 100, "
                                            r"got 500$"):
        load_config(None, overrides=["drift.low_confidence_examples=500"])  # checked under the name it moved to
