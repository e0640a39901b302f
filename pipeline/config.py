"""Typed configuration: a YAML file, then an optional profile overlay, then `--set section.key=value` overrides.

Validated once, here at the edge; stages receive these frozen objects (or plain values taken from them).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import PipelineError


def _repo_root() -> Path:
    """The checkout holding conf/ and data/. Imported from dist/pipeline.zip (spark-submit --py-files) the
    package sits inside a file: the checkout is then the directory the job was submitted from."""
    root = Path(__file__).resolve().parent.parent
    return root if root.is_dir() else Path.cwd()


REPO_ROOT = _repo_root()
PROFILES_DIR = REPO_ROOT / "conf" / "profiles"


@dataclass(frozen=True)
class SparkConfig:
    master: str = "local[*]"
    app_name: str = "mnist"
    log_level: str = "WARN"
    ui_enabled: bool = False
    shuffle_partitions: int = 8
    driver_memory: str = "4g"
    settings: dict[str, str] = field(default_factory=dict)  # any extra spark.* option, applied verbatim


@dataclass(frozen=True)
class PathsConfig:
    input: str = "data/mnist"          # raw files: local dir or any Hadoop-FS URI (hdfs://, s3a://, file://)
    data: str = "output/data"          # shared data stages (raw, quarantine, curated, EDA), keyed by config hash
    runs: str = "output/runs"          # one folder per run: models, evaluation, predictions, report
    store: str = "output/store"        # Horovod/Petastorm scratch (must be visible to every executor)


@dataclass(frozen=True)
class DataConfig:
    format: str = "auto"               # auto | idx | npz | csv
    train_images: str = "train-images-idx3-ubyte.gz"
    train_labels: str = "train-labels-idx1-ubyte.gz"
    test_images: str = "t10k-images-idx3-ubyte.gz"
    test_labels: str = "t10k-labels-idx1-ubyte.gz"
    npz_file: str = "mnist.npz"
    train_csv: str = "mnist_train.csv"
    test_csv: str = "mnist_test.csv"
    checksums_file: str = "SHA256SUMS"  # verified when present next to the input files
    image_height: int = 28
    image_width: int = 28
    num_classes: int = 10
    records_per_partition: int = 10000
    row_group_rows: int = 1000         # rows per Parquet file and row group: every Horovod shard gets several
    max_quarantine_fraction: float = 0.0
    # What ingest does with records that pass the record checks but are suspect: fail | warn | quarantine | drop
    blank_images: str = "quarantine"            # every pixel 0: no digit to learn from
    test_images_in_train: str = "quarantine"    # a train record whose exact image is also a test image (leakage)


@dataclass(frozen=True)
class PrepareConfig:
    seed: int = 42
    validation_size: float = 6000      # a count (>= 1) or a fraction of the training images (< 1)
    subset_fraction: float = 1.0       # stratified subset of every split (quick profile)


@dataclass(frozen=True)
class EdaConfig:
    seed: int = 7
    sample_images: int = 10
    histogram_bins: int = 32


@dataclass(frozen=True)
class ModelConfig:
    epochs: int


@dataclass(frozen=True)
class TrainConfig:
    models: dict[str, ModelConfig] = field(default_factory=lambda: {
        "model_1": ModelConfig(epochs=5), "model_2": ModelConfig(epochs=10), "model_3": ModelConfig(epochs=12)})
    num_workers: int = 0               # 0: one per core Spark has (spark.default.parallelism)
    batch_size: int = 32               # per worker
    learning_rate: float = 0.001       # for one worker; scaled by the number of workers
    warmup_epochs: int = 1
    seed: int = 42
    tf_threads_per_worker: int = 1     # intra-op threads; workers x threads should not exceed the cores
    reader_workers: int = 1            # Petastorm reader threads per worker
    reader_queue_size: int = 4         # row groups a worker's reader buffers (bounds its memory)
    stop_after_epochs: int = 0         # end this invocation after N epochs, model left resumable (0: never)
    start_timeout: int = 180           # seconds Horovod waits for all its Spark tasks to start


@dataclass(frozen=True)
class EvaluateConfig:
    target_accuracy: float = 0.90
    misclassified_examples: int = 25


@dataclass(frozen=True)
class PredictConfig:
    model: str = "best"                # "best" (from evaluation) or a model name
    batch_size: int = 1024
    skip_unreadable_images: bool = False
    tf_threads: int = 1                # TF threads per Python worker; Spark runs one worker per core
    image_decode_batch_size: int = 64  # rows per Arrow batch while decoding image files (raw bytes are large)
    print_rows: int = 50               # predictions of an image folder printed to stdout (all are written)
    max_image_pixels: int = 16_777_216  # width x height above which an image file is refused (decompression bombs)


@dataclass(frozen=True)
class ReportConfig:
    # The original study's validation accuracies, the yardstick the conclusions compare against.
    reference_val_accuracy: dict[str, float] = field(default_factory=lambda: {
        "model_1": 0.975, "model_2": 0.985, "model_3": 0.992})


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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def section_hash(self, *sections: str) -> str:
        """A short stable hash of the named sections: the identity of outputs derived from them."""
        payload = {name: dataclasses.asdict(getattr(self, name)) for name in sections}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]

    def resolve(self, path: str) -> str:
        """A configured path made absolute against the repo root, unless it is a URI or already absolute."""
        if "://" in path or Path(path).is_absolute():
            return path
        return str(REPO_ROOT / path)


def load_config(conf_file: str | Path | None = None, profile: str | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Load `conf_file`, overlay `conf/profiles/<profile>.yaml`, then apply `section.key=value` overrides."""
    raw: dict[str, Any] = {}
    if conf_file is not None:
        raw = _read_yaml(Path(conf_file))
    profile = profile or raw.get("profile") or "full"
    profile_file = PROFILES_DIR / f"{profile}.yaml"
    if not profile_file.exists():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
        raise PipelineError(f"unknown profile '{profile}' (known: {', '.join(known)})")
    raw = _deep_merge(raw, _read_yaml(profile_file))
    raw["profile"] = profile
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PipelineError(f"--set expects section.key=value, got '{item}'")
        _set_dotted(raw, key.strip(), yaml.safe_load(value))
    return _build(PipelineConfig, raw, "")


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise PipelineError(f"config file {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
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


def _set_dotted(raw: dict, dotted: str, value: Any) -> None:
    node = raw
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
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise PipelineError(f"unknown config key '{prefix}{_first_leaf(unknown[0], raw[unknown[0]])}'")
    kwargs = {name: _coerce(hints[name], value, f"{prefix}{name}") for name, value in raw.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise PipelineError(f"config section '{prefix.rstrip('.') or 'root'}': {exc}") from None


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
