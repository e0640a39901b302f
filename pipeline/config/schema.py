"""The configuration's schema: one frozen dataclass per section, each key with its type, default, range and, in the
comment beside or above it, its meaning (docs/configuration-reference.md is generated from this file).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from pipeline.config.checkout import REPO_ROOT
from pipeline.config.fields import Bounds, PlainName, between, count_or_fraction, fraction, one_of, positive
from pipeline.fingerprint import fingerprint_of
from pipeline.paths import joined_to
from pipeline.redaction import redacted

SEED_MAX = 2**31 - 1  # numpy seeds stop at 2**32 - 1; training adds the worker's rank to its seed


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
    # Rows each worker shuffles together before cutting its training batches (3 KB a row): each pass over its shard
    # is shuffled whole when it holds at most this many (MNIST's 54,000 training images do), as model.fit's shuffle
    # does, else in windows of whole row groups holding at least this many. The curated row groups keep MNIST's file
    # order, whose neighbours look alike: batches cut from one at a time made the models that keep their last epoch
    # worse and less repeatable. 0: batches cut from the row groups as they come.
    shuffle_window_rows: int = between(0, 10_000_000, default=60_000)
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
    # Parquet of at most this many images (the test set: 10,000) is read and scored in the job's driver process, not
    # on the executors: starting Python workers and loading the model in each costs more than the scoring. 0: never.
    driver_max_images: int = between(0, 100_000, default=10_000)


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
    # A day of at most this many records is decoded and scored in the job's driver process, not on the executors:
    # starting a Python worker and importing TensorFlow in it costs more than scoring a small day. 0: never.
    driver_max_images: int = between(0, 100_000, default=5000)


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
