"""Typed configuration: a YAML file, then an optional profile overlay, then `--set section.key=value` overrides.

Validated once, here at the edge; stages receive these frozen objects (or plain values taken from them).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import PipelineError
from pipeline.fingerprint import fingerprint_of
from pipeline.paths import is_uri, joined_to


def _checkout() -> Path:
    """The checkout holding conf/ and data/, found from where the package is, never from the working directory:
    the folder above pipeline/, or, imported from dist/pipeline.zip (spark-submit --py-files), the folder above
    dist/. Outside a checkout (a zip elsewhere, a site-packages install) it holds no conf/: pass --conf."""
    above_package = Path(__file__).resolve().parent.parent   # the checkout, or the zip the package sits in
    return above_package.parent.parent if above_package.is_file() else above_package


log = logging.getLogger(__name__)

REPO_ROOT = _checkout()
DEFAULT_CONF = REPO_ROOT / "conf" / "local.yaml"
PROFILES_FOLDER = "profiles"    # beside the config file: conf/local.yaml -> conf/profiles/<name>.yaml
DEFAULT_PROFILE = "full"        # the config file as it is: its overlay may be absent

SEED_MAX = 2**31 - 1  # numpy seeds stop at 2**32 - 1; training adds the worker's rank to its seed


@dataclass(frozen=True)
class Bounds:
    """The interval a number must lie in; `low_open` leaves out the low end (a fraction above 0)."""
    low: float
    high: float
    low_open: bool = False

    def admits(self, value: float) -> bool:
        # Written so that NaN is refused: every comparison with it is false.
        return (value > self.low if self.low_open else value >= self.low) and value <= self.high

    def __str__(self) -> str:
        return f"in ({self.low}, {self.high}]" if self.low_open else f"between {self.low} and {self.high}"


@dataclass(frozen=True)
class CountOrFraction:
    """A whole count (>= 1) or a fraction strictly between 0 and 1 of something counted later."""
    high: int

    def admits(self, value: float) -> bool:
        return 0 < value < 1 or (1 <= value <= self.high and value == int(value))

    def __str__(self) -> str:
        return f"a fraction in (0, 1) or a whole count between 1 and {self.high}"


@dataclass(frozen=True)
class Choices:
    options: tuple[str, ...]
    ignore_case: bool = False

    def admits(self, value: str) -> bool:
        return (value.upper() if self.ignore_case else value) in self.options

    def __str__(self) -> str:
        return f"one of {', '.join(self.options)}"


@dataclass(frozen=True)
class PlainName:
    """A name that becomes a folder name (the registry's model cache): letters, digits, '.', '_', '-', and not
    '.' or '..', so it cannot lead outside its folder."""
    def admits(self, value: str) -> bool:
        return re.fullmatch(r"[A-Za-z0-9._-]+", value) is not None and value not in (".", "..")

    def __str__(self) -> str:
        return "a plain name (letters, digits, '.', '_', '-')"


def between(low: float, high: float, default: Any = dataclasses.MISSING) -> Any:
    """A numeric field and its inclusive range, checked when the config is loaded."""
    return field(default=default, metadata={"allowed": Bounds(low, high)})


def positive(high: float, default: float) -> Any:
    """A numeric field in (0, high]."""
    return field(default=default, metadata={"allowed": Bounds(0, high, low_open=True)})


def fraction(default: float, *, zero: bool = True) -> Any:
    """A field in [0, 1], or in (0, 1] when `zero` is not allowed."""
    return field(default=default, metadata={"allowed": Bounds(0, 1, low_open=not zero)})


def count_or_fraction(high: int, default: float) -> Any:
    return field(default=default, metadata={"allowed": CountOrFraction(high)})


def one_of(*options: str, default: str, ignore_case: bool = False) -> Any:
    return field(default=default, metadata={"allowed": Choices(options, ignore_case)})


SPARK_LOG_LEVELS = ("ALL", "DEBUG", "ERROR", "FATAL", "INFO", "OFF", "TRACE", "WARN")  # SparkContext.setLogLevel
SUSPECT_RECORD_POLICIES = ("fail", "warn", "quarantine", "drop")
DRIFT_ACTIONS = ("fail", "warn")


@dataclass(frozen=True)
class SparkConfig:
    """The Spark application every job starts (pipeline/spark.py builds the one session)."""
    master: str = "local[*]"           # local[N], spark://host:port, yarn, k8s://...
    app_name: str = "mnist"            # prefix of the application's name; the job's name follows it
    log_level: str = one_of(*SPARK_LOG_LEVELS, default="WARN", ignore_case=True)  # Spark's own log level
    ui_enabled: bool = False           # the Spark UI (it listens on a port: off unless asked for)
    shuffle_partitions: int = between(1, 100_000, default=8)  # spark.sql.shuffle.partitions
    driver_memory: str = "4g"          # spark.driver.memory (under spark-submit, its --driver-memory decides)
    # The network interface Horovod's services (driver, Gloo rendezvous, one per task) listen on: "" means the
    # loopback interface in local mode, and Horovod's own choice (every interface) on a cluster.
    services_interface: str = ""
    settings: dict[str, str] = field(default_factory=dict)  # any extra spark.* option, applied verbatim


@dataclass(frozen=True)
class PathsConfig:
    """Where every input and output lives: local folders or Hadoop-FS URIs, relative ones under paths.root."""
    # The base of every relative path of this section (--set ones included): a folder or a URI. Empty: the folder
    # above the config file's folder (conf/local.yaml -> the checkout), or the checkout when no file is given.
    # A relative root is taken from that same folder. load_config replaces it with the base it resolved.
    root: str = ""
    input: str = "data/mnist"          # raw files: local dir or any Hadoop-FS URI (hdfs://, s3a://, file://)
    data: str = "output/data"          # shared data stages (raw, quarantine, curated, EDA), keyed by config hash
    runs: str = "output/runs"          # one folder per run: models, evaluation, predictions, report
    landing: str = "data/landing"      # scheduled batches arrive here, one ds=YYYY-MM-DD folder per day
    batches: str = "output/batches"    # scheduled batches' outputs: tables partitioned by ds, reports per day
    mlflow: str = "output/mlflow"      # the local MLflow store (SQLite, artifacts) and the registry's model cache


@dataclass(frozen=True)
class DataConfig:
    """What ingest reads from paths.input and how it checks the records."""
    format: str = one_of("auto", "idx", "npz", "csv", default="auto")  # auto: from the files present
    train_images: str = "train-images-idx3-ubyte.gz"   # IDX file of the training images, gzipped or plain
    train_labels: str = "train-labels-idx1-ubyte.gz"   # IDX file of their labels
    test_images: str = "t10k-images-idx3-ubyte.gz"     # IDX file of the test images
    test_labels: str = "t10k-labels-idx1-ubyte.gz"     # IDX file of their labels
    npz_file: str = "mnist.npz"                         # Keras's mnist.npz (x_train, y_train, x_test, y_test)
    train_csv: str = "mnist_train.csv"                  # training images: a header, then label and 784 pixels a line
    test_csv: str = "mnist_test.csv"                    # test images, the same way
    checksums_file: str = "SHA256SUMS"  # verified when present next to the input files
    records_per_partition: int = between(1, 10_000_000, default=10000)  # records per Spark partition when parsed
    # Rows per Parquet file and row group: every Horovod shard gets several.
    row_group_rows: int = between(1, 10_000_000, default=1000)
    max_quarantine_fraction: float = fraction(0.0)  # ingest fails when more of the records are quarantined
    # What ingest does with records that pass the record checks but are suspect: a blank image (every pixel 0) ...
    blank_images: str = one_of(*SUSPECT_RECORD_POLICIES, default="quarantine")
    # ... and a training image also in the test set (a leak).
    test_images_in_train: str = one_of(*SUSPECT_RECORD_POLICIES, default="quarantine")


@dataclass(frozen=True)
class PrepareConfig:
    """How prepare splits the training images into train and validation (the test images stay untouched)."""
    seed: int = between(0, SEED_MAX, default=42)   # of the hash that assigns each record to its split
    # A count (>= 1) or a fraction of the training images (< 1).
    validation_size: float = count_or_fraction(10_000_000, default=6000)
    subset_fraction: float = fraction(1.0, zero=False)  # stratified subset of every split (quick profile)


@dataclass(frozen=True)
class EdaConfig:
    """The exploratory statistics and figures."""
    seed: int = between(0, SEED_MAX, default=7)             # of the sample images shown
    sample_images: int = between(0, 100, default=10)        # panels of one figure
    histogram_bins: int = between(1, 256, default=32)       # pixels take 256 values


KEEP_RULES = ("last", "best")             # which epoch's weights become model.keras
LR_SCHEDULES = ("constant", "cosine")     # the learning rate after the warm-up


@dataclass(frozen=True)
class ModelConfig:
    """One model's training recipe. The defaults are the study's: its last epoch kept, no augmentation, a constant
    learning rate, train.batch_size and train.learning_rate."""
    epochs: int = between(1, 10_000)                 # epochs of this model (required)
    keep: str = one_of(*KEEP_RULES, default="last")   # best: the epoch with the highest validation accuracy
    augment: bool = False                  # random shifts, rotations and zooms of the training images (recipe.py)
    schedule: str = one_of(*LR_SCHEDULES, default="constant")  # cosine: from the warm-up's end down to 0
    batch_size: int = between(0, 65536, default=0)      # per worker; 0: train.batch_size
    learning_rate: float = between(0, 10, default=0.0)  # for one worker; 0: train.learning_rate


@dataclass(frozen=True)
class TrainConfig:
    """Horovod data-parallel training of the models on Spark, each rank reading its Petastorm shard."""
    # The models to train, by name (model_1..model_4, pipeline/train/models.py), each with its recipe.
    models: dict[str, ModelConfig] = field(default_factory=lambda: {
        "model_1": ModelConfig(epochs=5), "model_2": ModelConfig(epochs=10), "model_3": ModelConfig(epochs=12)})
    num_workers: int = between(0, 4096, default=0)         # 0: one per executor (local mode: 1); else Horovod ranks
    batch_size: int = between(1, 65536, default=32)        # per worker
    learning_rate: float = positive(10, default=0.001)    # for one worker; scaled by the number of workers
    warmup_epochs: int = between(0, 10_000, default=1)     # epochs of learning-rate warm-up from one worker's rate
    seed: int = between(0, SEED_MAX, default=42)            # of weights and shuffling (each rank adds its rank)
    tf_threads_per_worker: int = between(0, 1024, default=0)  # 0: slots / workers; workers x threads <= cores
    reader_workers: int = between(1, 256, default=1)       # Petastorm reader threads per worker
    reader_queue_size: int = between(1, 1024, default=4)   # row groups a worker's reader buffers (bounds memory)
    stop_after_epochs: int = between(0, 10_000, default=0)  # end after N epochs, model left resumable (0: never)
    start_timeout: int = between(1, 86_400, default=180)   # seconds Horovod waits for all its Spark tasks to start


@dataclass(frozen=True)
class EvaluateConfig:
    """Scoring the trained models on the untouched test set."""
    target_accuracy: float = fraction(0.90)  # the best model's test accuracy must reach it (the gate), as a promotion's
    misclassified_examples: int = between(0, 100, default=25)  # panels of one figure per model


@dataclass(frozen=True)
class PredictConfig:
    """Batch prediction (jobs/predict.py) and the scoring every job shares."""
    model: str = "best"                # "best" (from evaluation), a model name, or models:/<name>@<alias>
    batch_size: int = between(1, 65536, default=1024)     # images per model.predict call (and per Arrow batch)
    skip_unreadable_images: bool = False   # false: an unreadable image file fails the job (all are listed)
    tf_threads: int = between(1, 1024, default=1)          # TF threads per Python worker; one worker per core
    # Predictions of an image folder printed to stdout (all are written).
    print_rows: int = between(0, 1_000_000, default=50)
    # Width x height above which an image file is refused (decompression bombs).
    max_image_pixels: int = between(1, 2**31 - 1, default=16_777_216)


@dataclass(frozen=True)
class ReportConfig:
    """The run's report (report.md, report.html)."""
    # The original study's validation accuracies, the yardstick the conclusions compare against.
    reference_val_accuracy: dict[str, float] = field(default_factory=lambda: {
        "model_1": 0.975, "model_2": 0.985, "model_3": 0.992}, metadata={"allowed": Bounds(0, 1)})
    # The measured seeds and ablation of a model's recipe (benchmarks/model4.py writes it; relative to paths.root):
    # the model's section shows them when the file is there. Empty: none.
    recipe_study: str = "benchmarks/results/model4-full.json"


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow experiment tracking and the model registry (pipeline/tracking/). Off: nothing imports or writes MLflow."""
    enabled: bool = True                   # log runs and register models
    # "": MLFLOW_TRACKING_URI when set, else a SQLite store under paths.mlflow (nothing to start).
    uri: str = ""
    # Where a new experiment keeps its artifacts. "": <paths.mlflow>/artifacts for the local store, the server's
    # choice for a tracking server.
    artifact_location: str = ""
    experiment: str = "mnist-spark-pipeline"   # the MLflow experiment of every run
    # The registered model the evaluation registers into and the scheduled scoring takes its champion from.
    registered_model: str = field(default="mnist-digit-classifier", metadata={"allowed": PlainName()})
    # The challenger replaces the champion only when its test accuracy (on the same test set) is higher by at least
    # this much, and at least evaluate.target_accuracy.
    promotion_margin: float = fraction(0.001)
    # How often MLflow samples CPU, memory, disk and network (system/* metrics) while a model trains.
    system_metrics_seconds: int = between(1, 3600, default=10)


@dataclass(frozen=True)
class RetrainConfig:
    """Retraining on labelled batches (jobs/retrain.py): which models to train again and how the challenger is
    judged beyond the test set."""
    models: str = "all"                                   # "all" or comma-separated names from train.models
    epochs: int = between(0, 10_000, default=0)          # 0: each model's train.models epochs
    newest_days: int = between(1, 366, default=1)        # the newest labelled days scored beside the test set
    # Keep the newest labelled days out of the challenger's training data, so that its accuracy on them is not
    # a training-set figure; they join the training data at the next retraining.
    hold_out_newest: bool = True


@dataclass(frozen=True)
class DriftConfig:
    """How far a scheduled day's batch may stray from the training data before it is flagged (no labels needed).
    The defaults are calibrated in docs/scheduling.md "Drift check": scanned MNIST-like digits pass, non-digit
    images do not."""
    on_drift: str = one_of(*DRIFT_ACTIONS, default="fail")   # a flagged batch fails its job, or only warns
    ink_threshold: float = fraction(0.5, zero=False)         # a pixel at or above this level is ink
    low_confidence: float = fraction(0.8, zero=False)        # a prediction whose top probability is below is unsure
    # Largest allowed |batch - training| of the pixel statistics (pixels in [0, 1]): of the pixels' mean, ...
    max_pixel_mean_change: float = fraction(0.05)
    max_pixel_std_change: float = fraction(0.08)             # ... of their standard deviation,
    max_ink_share_change: float = fraction(0.06)             # ... of the share of ink pixels
    # Largest allowed distances, on top of what sampling alone gives a batch of that many images (see drift.py).
    max_mean_image_distance: float = fraction(0.07)          # RMS over pixels: batch mean image vs training's
    max_class_distance: float = fraction(0.08)               # total variation: predicted classes vs training labels
    max_low_confidence_share: float = fraction(0.40)         # ceiling on the share of unsure predictions


@dataclass(frozen=True)
class BatchConfig:
    """The scheduled days' scoring and report (score_batch, batch_report); their drift check is drift's."""
    # Rows per Arrow batch while score_batch decodes landed image files (predict decodes and scores image files
    # in batches of predict.batch_size: only their paths travel in Arrow).
    image_decode_batch_size: int = between(1, 65536, default=64)
    low_confidence_examples: int = between(0, 100, default=20)  # panels of the batch report's unsure-images grid


@dataclass(frozen=True)
class PipelineConfig:
    profile: str = "full"
    spark: SparkConfig = field(default_factory=SparkConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    data: DataConfig = field(default_factory=DataConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    eda: EdaConfig = field(default_factory=EdaConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    predict: PredictConfig = field(default_factory=PredictConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        """Every value as configured, secrets included: for hashing, never for writing or logging."""
        return dataclasses.asdict(self)

    def to_redacted_dict(self) -> dict[str, Any]:
        """The config to write or log: secret-looking keys and URI passwords replaced by REDACTED."""
        return redacted(self.to_dict())

    def section_hash(self, *sections: str) -> str:
        """A short stable hash of the named sections: the identity of outputs derived from them."""
        payload = {name: dataclasses.asdict(getattr(self, name)) for name in sections}
        return fingerprint_of(payload)

    def resolve(self, path: str) -> str:
        """A configured path joined to `paths.root`, unless it is a URI or already absolute."""
        return joined_to(self.paths.root or str(REPO_ROOT), path)


def default_paths_root(conf_file: str | Path | None) -> str:
    """The folder above the config file's folder (conf/local.yaml -> the checkout); the checkout without a file."""
    if conf_file is None:
        return str(REPO_ROOT)
    return os.path.dirname(os.path.dirname(os.path.abspath(conf_file)))


REDACTED = "***redacted***"
# Key names that hold credentials, in any section: Hadoop's fs.s3a.secret.key / access.key / session.token,
# fs.azure.account.key.<account>, fs.s3a.encryption.key, spark.authenticate.secret, spark.ssl.keyPassword, ...
_SECRET_KEY = re.compile(r"secret|passw(or)?d|token|credential|private[ ._-]?key|api[ ._-]?key|access[ ._-]?key"
                         r"|account[ ._-]?key|encryption[ ._-]?key", re.IGNORECASE)
# scheme://user:password@host; a password may hold "/" (AWS secret keys do), so only "@" and blanks end it
_URI_PASSWORD = re.compile(r"(://[^/@:\s]*:)[^@\s]+@")


def refuse_uri_password(path: str, what: str) -> str:
    """`path`, unless it is a URI carrying a password: libraries (Arrow, Hadoop) print a path whole in their
    errors, so a password in one would reach logs and tracebacks. Credentials go in settings, which are redacted."""
    if _URI_PASSWORD.search(path):
        raise PipelineError(f"{what} {redacted(path)} holds a password in the URI: pass credentials as settings "
                            "(e.g. spark.settings.spark.hadoop.fs.s3a.secret.key, redacted everywhere) or the "
                            "store's environment variables, never in a path")
    return path


def _refuse_uri_passwords(node: Any, key: str) -> None:
    """Every string value of the config (paths, the tracking URI, Spark settings) through refuse_uri_password."""
    if isinstance(node, dict):
        for name, value in node.items():
            _refuse_uri_passwords(value, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list):
        for item in node:
            _refuse_uri_passwords(item, key)
    elif isinstance(node, str):
        refuse_uri_password(node, f"{key}:")


def looks_secret(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None


def redacted(node: Any) -> Any:
    """`node` (JSON-like) with the values of secret-looking keys and URI passwords replaced by REDACTED."""
    if isinstance(node, dict):
        return {k: REDACTED if looks_secret(str(k)) else redacted(v) for k, v in node.items()}
    if isinstance(node, list):
        return [redacted(item) for item in node]
    if isinstance(node, str):
        return _URI_PASSWORD.sub(rf"\1{REDACTED}@", node)
    return node


def load_config(conf_file: str | Path | None = None, profile: str | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Load `conf_file`, overlay `profiles/<profile>.yaml` beside it (the checkout's conf/profiles without a file),
    then apply `section.key=value` overrides; `paths.root` comes back as the base it resolves to."""
    raw: dict[str, Any] = {}
    if conf_file is not None:
        raw = _read_yaml(Path(conf_file))
    profiles = profiles_dir(conf_file)
    profile = profile or raw.get("profile") or DEFAULT_PROFILE
    overlay = profile_file(profile, profiles)
    if overlay is not None:
        raw = _deep_merge(raw, _read_yaml(overlay))
    raw["profile"] = profile
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PipelineError(f"--set expects section.key=value, got '{item}'")
        _set_dotted(raw, key.strip(), _parse_value(key.strip(), value))
    _read_moved_keys(raw)
    cfg = _build(PipelineConfig, raw, "")
    _refuse_uri_passwords(cfg.to_dict(), "")
    root = _paths_root(cfg.paths.root, conf_file)
    return dataclasses.replace(cfg, paths=dataclasses.replace(cfg.paths, root=root))


# Keys that moved to the section of the stage reading them: the old name is read, with a warning, until the next
# release (docs/configuration.md).
MOVED_KEYS = {"predict.image_decode_batch_size": "batch.image_decode_batch_size",
              "drift.low_confidence_examples": "batch.low_confidence_examples"}


def _read_moved_keys(raw: dict[str, Any]) -> None:
    """Move the values set under a key's old name to its new one, each with one warning line."""
    for old, new in MOVED_KEYS.items():
        old_section, old_key = old.split(".")
        section = raw.get(old_section)
        if not isinstance(section, dict) or old_key not in section:
            continue
        new_section, new_key = new.split(".")
        target = raw.setdefault(new_section, {})
        if isinstance(target, dict) and new_key in target:
            raise PipelineError(f"config keys '{old}' and '{new}' are both set: '{old}' is the old name of '{new}', "
                                "keep only the new one")
        log.warning("config key '%s' is now '%s': rename it (the old name is read until the next release)", old, new)
        if isinstance(target, dict):
            target[new_key] = section.pop(old_key)


def _paths_root(configured: str, conf_file: str | Path | None) -> str:
    """The base of relative paths: `paths.root` as configured, taken from the default base when relative."""
    default = default_paths_root(conf_file)
    if not configured:
        return default
    root = joined_to(default, configured)
    return root if is_uri(root) else os.path.normpath(root)


def _parse_value(key: str, text: str) -> Any:
    """A `--set` value read as YAML, so that numbers, booleans and lists get their types."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise PipelineError(f"--set {key}: value '{text}' is not valid YAML (quote it)") from None


_PROFILE_NAME = re.compile(r"[A-Za-z0-9_-]+")


def profiles_dir(conf_file: str | Path | None) -> Path:
    """profiles/ beside the config file (conf/local.yaml -> conf/profiles), the checkout's without a file."""
    conf_dir = Path(os.path.abspath(conf_file)).parent if conf_file is not None else DEFAULT_CONF.parent
    return conf_dir / PROFILES_FOLDER


def known_profiles(profiles: Path) -> list[str]:
    """The names `--profile` accepts: <profiles>/<name>.yaml with a plain name."""
    return sorted(p.stem for p in profiles.glob("*.yaml") if _PROFILE_NAME.fullmatch(p.stem))


def profile_file(profile: Any, profiles: Path) -> Path | None:
    """The profile's file in `profiles`: a plain name only, so that no path can lead outside that folder. None for
    the default profile when it has no file: the config file as it is."""
    known = known_profiles(profiles)
    if profile not in known:
        if profile == DEFAULT_PROFILE:
            return None
        raise PipelineError(f"unknown profile '{profile}' (known in {profiles}: {', '.join(known) or 'none'})")
    return profiles / f"{profile}.yaml"


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise PipelineError(f"config file {path} does not exist")
    if not path.is_file():
        raise PipelineError(f"config file {path} is not a file")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise PipelineError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise PipelineError(f"config file {path} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"config file {path} is not valid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(loaded, dict):
        raise PipelineError(f"config file {path} must hold a mapping of sections")
    return loaded


def _deep_merge(base: dict, overlay: dict) -> dict:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# Spark option names hold dots themselves: everything after this prefix is one key of spark.settings.
VERBATIM_KEYS_UNDER = "spark.settings."


def _set_dotted(raw: dict, dotted: str, value: Any) -> None:
    node = raw
    if dotted.startswith(VERBATIM_KEYS_UNDER) and len(dotted) > len(VERBATIM_KEYS_UNDER):
        parents, leaf = VERBATIM_KEYS_UNDER.rstrip(".").split("."), dotted[len(VERBATIM_KEYS_UNDER):]
    else:
        *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise PipelineError(f"unknown config key '{dotted}': '{part}' is not a section")
    node[leaf] = value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    """Instantiate dataclass `cls` from `raw`, naming the dotted key of any unknown key or wrong type."""
    if not isinstance(raw, dict):
        raise PipelineError(f"config key '{prefix.rstrip('.')}' must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    unknown = sorted(set(raw) - {f.name for f in fields}, key=str)
    if unknown:
        raise PipelineError(f"unknown config key '{prefix}{_first_leaf(unknown[0], raw[unknown[0]])}'")
    required = [f.name for f in fields if f.name not in raw and _has_no_default(f)]
    if required:
        raise PipelineError(f"config key '{prefix}{required[0]}' is required")
    built = cls(**{name: _coerce(hints[name], value, f"{prefix}{name}") for name, value in raw.items()})
    for f in fields:
        if "allowed" in f.metadata:
            _check_allowed(f.metadata["allowed"], getattr(built, f.name), f"{prefix}{f.name}")
    return built


def _has_no_default(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _check_allowed(allowed: Bounds | CountOrFraction | Choices | PlainName, value: Any, key: str) -> None:
    """The value (or every value of a mapping, named by its own key) must be one the field declares allowed."""
    if isinstance(value, dict):
        for name, item in value.items():
            _check_allowed(allowed, item, f"{key}.{name}")
    elif not allowed.admits(value):
        raise PipelineError(f"config key '{key}' must be {allowed}, got {value!r}")


def _first_leaf(key: str, value: Any) -> str:
    """`nosuch.key` rather than `nosuch` for an unknown section: the key exactly as the user wrote it."""
    while isinstance(value, dict) and len(value) == 1:
        (child, value), = value.items()
        key = f"{key}.{child}"
    return key


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")
    if origin is dict:
        _, value_type = typing.get_args(hint)
        if not isinstance(value, dict):
            raise PipelineError(f"config key '{key}' must be a mapping, got {value!r}")
        return {str(k): _coerce(value_type, v, f"{key}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            if option is type(None) and value is None:
                return None
        return _coerce(next(a for a in typing.get_args(hint) if a is not type(None)), value, key)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise PipelineError(f"config key '{key}' must be {hint.__name__}, got {value!r}")
    return value
