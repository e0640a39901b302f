"""Where every stage reads and writes, and what every file is called: derived from config alone, so each job finds
the others' outputs. Nothing else builds a path or names a file: callers ask a Layout.

Data stages are keyed by a hash of the config that shapes them, so runs with the same inputs and data config
share them; everything model-related lives in one folder per run. The folders a stage writes into a temporary
sibling and publishes in one move (EDA, evaluation, predictions) are described by a small object on their root
(`EdaFiles`, `EvaluationFiles`, `PredictionFiles`), so the same names serve the temporary folder and the
published one.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from pipeline.config import PipelineConfig
from pipeline.fingerprint import fingerprint_of
from pipeline.run_ids import checked_ds, checked_run_id, default_run_id

SPLITS = ("train", "validation", "test")
MANIFEST = "manifest.json"
MODEL_FILE = "model.keras"
LABELS_FILE = "labels.csv"
# In each folder of a scored day: the token of the scoring that wrote it (pipeline/day_publication.py). Its
# leading "_" keeps Spark and pyarrow from reading it as data.
PUBLICATION_MARKER = "_publication"


def model_file_in(model_dir: str) -> str:
    """The saved model of a training output folder: this run's, or any other a user points at."""
    return f"{model_dir}/{MODEL_FILE}"


@dataclass(frozen=True)
class CheckpointFiles:
    """One model's checkpoint folder: TensorFlow's weights (files under a prefix) and the epoch state."""
    root: str

    @property
    def weights(self) -> str:
        """The prefix tf.train.Checkpoint writes and reads (weights.index, weights.data-*)."""
        return f"{self.root}/weights"

    @property
    def state(self) -> str:
        return f"{self.root}/state.json"


@dataclass(frozen=True)
class EdaFiles:
    """The EDA folder: summary, manifest, one CSV per table and one PNG per figure."""
    root: str
    SUMMARY: ClassVar[str] = "summary.json"

    @staticmethod
    def table_name(name: str) -> str:
        return f"{name}.csv"

    @staticmethod
    def figure_name(name: str) -> str:
        return f"{name}.png"

    @property
    def summary(self) -> str:
        return f"{self.root}/{self.SUMMARY}"

    @property
    def manifest(self) -> str:
        return f"{self.root}/{MANIFEST}"

    def table(self, name: str) -> str:
        return f"{self.root}/{self.table_name(name)}"

    def figure(self, name: str) -> str:
        return f"{self.root}/{self.figure_name(name)}"


@dataclass(frozen=True)
class EvaluationFiles:
    """The evaluation folder: per model metrics and figures, the comparison, the best model, the manifest."""
    root: str

    def metrics(self, model: str) -> str:
        return f"{self.root}/{model}/metrics.json"

    def confusion_matrix_csv(self, model: str) -> str:
        return f"{self.root}/{model}/confusion_matrix.csv"

    def confusion_matrix_png(self, model: str) -> str:
        return f"{self.root}/{model}/confusion_matrix.png"

    def misclassified_png(self, model: str) -> str:
        return f"{self.root}/{model}/misclassified.png"

    @property
    def comparison(self) -> str:
        return f"{self.root}/comparison.json"

    @property
    def comparison_table(self) -> str:
        return f"{self.root}/comparison.md"

    @property
    def best_model(self) -> str:
        """The record prediction reads by default: {"model", "model_path", "test_accuracy"}."""
        return f"{self.root}/best_model.json"

    @property
    def promotion(self) -> str:
        """The registry's decision (tracking on): challenger and champion, both scored on this test set, the rule."""
        return f"{self.root}/promotion.json"

    @property
    def manifest(self) -> str:
        return f"{self.root}/{MANIFEST}"


@dataclass(frozen=True)
class PredictionFiles:
    """One prediction output folder (under the run, or wherever --output points)."""
    root: str

    @property
    def predictions(self) -> str:
        return f"{self.root}/predictions.parquet"

    @property
    def metrics(self) -> str:
        """Accuracy, written when the input has labels."""
        return f"{self.root}/metrics.json"

    @property
    def confusion_matrix(self) -> str:
        return f"{self.root}/confusion_matrix.csv"

    @property
    def manifest(self) -> str:
        return f"{self.root}/{MANIFEST}"

    @property
    def unreadable_list(self) -> str:
        """The image files that could not be scored, when skipping them is allowed."""
        return f"{self.root}/unreadable.csv"

    @property
    def failed_unreadable_list(self) -> str:
        """The same list when they fail the job: beside the folder, so earlier predictions stay intact."""
        return f"{self.root.rstrip('/')}.unreadable.csv"


PARTITION_GLOB = "ds=????-??-??"  # exactly the published day folders: not their .tmp-*/.old-* siblings, nor locks


@dataclass(frozen=True)
class RetrainingFiles:
    """One retraining's data and decision (ds = the date it ran for), beside the batch tables:

    <batches>/retrain/ds=<date>/train/          the training set: the original train split plus labelled batches
    <batches>/retrain/ds=<date>/manifest.json   its fingerprint and counts (the curated manifest's shape), last
    <batches>/retrain/ds=<date>/decision.json   challenger and champion on both sets, promoted or not
    <batches>/retrain/ds=<date>/decision.md     the same, as a table and the rule's conditions
    <batches>/retrain/ds=<date>/drift_baseline.json   the training set's drift baseline, once it serves
    """
    root: str

    @property
    def train(self) -> str:
        return f"{self.root}/train"

    @property
    def manifest(self) -> str:
        return f"{self.root}/{MANIFEST}"

    @property
    def decision(self) -> str:
        """What the retraining DAG branches on."""
        return f"{self.root}/decision.json"

    @property
    def decision_summary(self) -> str:
        """decision.json as a person reads it on Monday morning: the evidence side by side, each condition judged."""
        return f"{self.root}/decision.md"


@dataclass(frozen=True)
class BatchFiles:
    """One day of scheduled batches (ds = YYYY-MM-DD). Tables are partitioned by day, one `ds=<date>` folder each,
    so a rerun or a backfill replaces exactly that day's folders and never touches another day's.

    landing/ds=<date>/             what arrived: image files (or one IDX/CSV/npz file), labels.csv maybe later
    <batches>/images/ds=<date>/       the day's records that passed the checks, normalised (curated schema)
    <batches>/quarantine/ds=<date>/   the day's records that failed them, with the reason
    <batches>/predictions/ds=<date>/  one row per image: source file, model version, prediction, probabilities
    <batches>/reports/ds=<date>/      validation report, scoring summary, drift statistics, the batch report
    <batches>/retrain/ds=<date>/      a retraining run for the day: its training set and decision (RetrainingFiles)
    """
    landing_root: str
    root: str
    ds: str

    def __post_init__(self) -> None:
        checked_ds(self.ds)

    @property
    def partition(self) -> str:
        return f"ds={self.ds}"

    @property
    def landing(self) -> str:
        return f"{self.landing_root}/{self.partition}"

    @property
    def labels(self) -> str:
        """file,label rows for the day's images; may arrive days after the images."""
        return f"{self.landing}/{LABELS_FILE}"

    def table(self, name: str) -> str:
        """A table partitioned by day: images, quarantine, predictions."""
        return f"{self.root}/{name}"

    def published(self, name: str) -> str:
        """What to read for every day of table `name`: the day folders alone, as a glob (read it with
        option basePath=table(name) to get the ds column). The table's root also holds each day's lock file and,
        while a day is being rewritten, its temporary sibling: Spark would read those as partitions."""
        return f"{self.table(name)}/{PARTITION_GLOB}"

    @property
    def images(self) -> str:
        return f"{self.table('images')}/{self.partition}"

    @property
    def quarantine(self) -> str:
        return f"{self.table('quarantine')}/{self.partition}"

    @property
    def predictions(self) -> str:
        return f"{self.table('predictions')}/{self.partition}"

    @property
    def reports(self) -> str:
        return f"{self.root}/reports/{self.partition}"

    @property
    def scored_tables(self) -> dict[str, str]:
        """The day's table folders a scoring publishes before its reports folder (scoring.json)."""
        return {"images": self.images, "quarantine": self.quarantine, "predictions": self.predictions}

    @property
    def report_files(self) -> BatchReportFiles:
        return BatchReportFiles(self.reports)

    @property
    def validation_report(self) -> str:
        return self.report_files.validation_report

    @property
    def scoring(self) -> str:
        return self.report_files.scoring

    @property
    def drift(self) -> str:
        return self.report_files.drift

    @property
    def report_md(self) -> str:
        return self.report_files.report_md

    @property
    def report_html(self) -> str:
        return self.report_files.report_html

    @property
    def report_figures(self) -> str:
        return self.report_files.figures

    def report_figure(self, key: str) -> str:
        return self.report_files.figure(key)

    @property
    def retraining(self) -> RetrainingFiles:
        return RetrainingFiles(f"{self.root}/retrain/{self.partition}")

    @property
    def retrain_decision(self) -> str:
        """decision.json of the day's retraining (what the retraining DAG branches on)."""
        return self.retraining.decision


@dataclass(frozen=True)
class BatchReportFiles:
    """One day's reports folder (or the temporary folder scoring builds it in, then publishes in one move).
    Scoring publishes the folder whole, holding its two files: rescoring a day drops the drift statistics and
    report of the earlier scoring, which described other predictions. Later tasks of the day add their files
    one at a time (storage.write_json / write_text, atomic per file), under the folder's lock."""
    root: str
    FIGURES: ClassVar[str] = "figures"

    @property
    def validation_report(self) -> str:
        """The day's record checks: BatchValidationReport (pipeline.validation_report)."""
        return f"{self.root}/validation_report.json"

    @property
    def scoring(self) -> str:
        """The scoring summary: model name and version, counts per class, confidence."""
        return f"{self.root}/scoring.json"

    @property
    def drift(self) -> str:
        return f"{self.root}/drift.json"

    @property
    def report_md(self) -> str:
        return f"{self.root}/report.md"

    @property
    def report_html(self) -> str:
        return f"{self.root}/report.html"

    @property
    def figures(self) -> str:
        """The batch report's figures folder, published as one."""
        return f"{self.root}/{self.FIGURES}"

    @staticmethod
    def figure_name(key: str) -> str:
        return f"{key}.png"

    @classmethod
    def figure_link(cls, key: str) -> str:
        """A figure as the batch report links it, relative to the report."""
        return f"{cls.FIGURES}/{cls.figure_name(key)}"

    def figure(self, key: str) -> str:
        return f"{self.root}/{self.figure_link(key)}"


@dataclass(frozen=True)
class Layout:
    input_dir: str
    raw_root: str        # <data>/<ingest hash>: raw/, quarantine/, validation_report.json, manifest.json
    curated_root: str    # <raw_root>/curated-<prepare hash>: train/, validation/, test/, manifest.json, eda/
    run_root: str        # <runs>/<run id>
    landing_root: str = ""   # <landing>: scheduled batches arrive here
    batches_root: str = ""   # <batches>: scheduled batches' outputs
    retraining_root: str = ""  # set by retraining_on(ds): the train split and its manifest come from there
    mlflow_root: str = ""    # <mlflow>: the local MLflow store and the registry's model cache

    @classmethod
    def from_config(cls, cfg: PipelineConfig, run_id: str | None = None) -> Layout:
        raw_root = f"{cfg.resolve(cfg.paths.data).rstrip('/')}/ingest-{ingest_hash(cfg)}"
        curated_root = f"{raw_root}/curated-{cfg.section_hash('data', 'prepare')}"
        run_root = f"{cfg.resolve(cfg.paths.runs).rstrip('/')}/{checked_run_id(run_id or default_run_id(cfg))}"
        return cls(cfg.resolve(cfg.paths.input), raw_root, curated_root, run_root,
                   cfg.resolve(cfg.paths.landing).rstrip("/"), cfg.resolve(cfg.paths.batches).rstrip("/"),
                   mlflow_root=cfg.resolve(cfg.paths.mlflow).rstrip("/"))

    @property
    def raw(self) -> str:
        return f"{self.raw_root}/raw"

    @property
    def quarantine(self) -> str:
        return f"{self.raw_root}/quarantine"

    @property
    def validation_report(self) -> str:
        return f"{self.raw_root}/validation_report.json"

    @property
    def raw_manifest(self) -> str:
        return f"{self.raw_root}/{MANIFEST}"

    def retraining_on(self, ds: str) -> Layout:
        """This layout training on the retraining data set of day `ds`: its train split and manifest replace the
        prepared ones; validation and test stay the prepared, untouched splits."""
        return dataclasses.replace(self, retraining_root=self.batch_files(ds).retraining.root)

    def curated(self, split: str) -> str:
        """The split training and evaluation read: prepare's, except the train split of a retraining layout."""
        if split == "train" and self.retraining_root:
            return RetrainingFiles(self.retraining_root).train
        return self.prepared(split)

    @property
    def curated_manifest(self) -> str:
        """The manifest of the splits curated() names (for a retraining layout, the retraining data's)."""
        if self.retraining_root:
            return RetrainingFiles(self.retraining_root).manifest
        return self.prepared_manifest

    def prepared(self, split: str) -> str:
        """The prepare stage's split, whatever this layout trains on: retraining starts from the original."""
        return f"{self.curated_root}/{split}"

    @property
    def prepared_manifest(self) -> str:
        return f"{self.curated_root}/{MANIFEST}"

    @property
    def eda(self) -> str:
        return f"{self.curated_root}/eda"

    @property
    def drift_baseline(self) -> str:
        """The prepared training split's statistics, which a day's drift check compares with when the model that
        scored it was trained on that split: computed once per data set (and ink threshold) by the same code that
        measures a batch."""
        return drift_baseline_of(self.prepared("train"))

    @property
    def eda_files(self) -> EdaFiles:
        return EdaFiles(self.eda)

    @property
    def run_id(self) -> str:
        return self.run_root.rstrip("/").rsplit("/", 1)[-1]

    @property
    def training(self) -> str:
        """The training stage's folder: one folder per model."""
        return f"{self.run_root}/train"

    def model_dir(self, model_name: str) -> str:
        return f"{self.training}/{model_name}"

    def model_file(self, model_name: str) -> str:
        return model_file_in(self.model_dir(model_name))

    def history(self, model_name: str) -> str:
        """history.json: the contract evaluation and the report read."""
        return f"{self.model_dir(model_name)}/history.json"

    def checkpoint_dir(self, model_name: str) -> str:
        return f"{self.model_dir(model_name)}/checkpoint"

    def best_checkpoint_dir(self, model_name: str) -> str:
        """The weights of the epoch with the best validation accuracy so far (a model keeping its best epoch)."""
        return f"{self.model_dir(model_name)}/best-epoch"

    def curves(self, model_name: str) -> str:
        return f"{self.model_dir(model_name)}/curves.png"

    def tensorboard_dir(self, model_name: str) -> str:
        """TensorBoard event files rank 0 writes while training: `tensorboard --logdir <runs>` finds them all."""
        return f"{self.model_dir(model_name)}/tensorboard"

    @property
    def tracking_record(self) -> str:
        """Which MLflow runs and registered versions hold this run's models (tracking on): the link between jobs."""
        return f"{self.run_root}/tracking.json"

    @property
    def evaluation(self) -> str:
        return f"{self.run_root}/evaluate"

    @property
    def evaluation_files(self) -> EvaluationFiles:
        return EvaluationFiles(self.evaluation)

    @property
    def predictions(self) -> str:
        return f"{self.run_root}/predict"

    def prediction_dir(self, input_name: str) -> str:
        """predict's default output folder for an input (the curated test set's input name is its split, test)."""
        return f"{self.predictions}/{input_name}"

    def prediction_files(self, input_name: str) -> PredictionFiles:
        return PredictionFiles(self.prediction_dir(input_name))

    @property
    def report(self) -> str:
        """The report's stem: report.md and report.html, with figures/ beside them (locked as one output)."""
        return f"{self.run_root}/report"

    @property
    def report_md(self) -> str:
        return f"{self.report}.md"

    @property
    def report_html(self) -> str:
        return f"{self.report}.html"

    @staticmethod
    def report_figure_link(key: str) -> str:
        """A figure as the report links it, relative to the report."""
        return f"figures/{key}.png"

    def report_figure(self, key: str) -> str:
        return f"{self.run_root}/{self.report_figure_link(key)}"

    @property
    def run_manifest(self) -> str:
        return f"{self.run_root}/{MANIFEST}"

    def batch_files(self, ds: str) -> BatchFiles:
        return BatchFiles(self.landing_root, self.batches_root, ds)

    @property
    def mlflow_db(self) -> str:
        """The local tracking store (SQLite), used when neither tracking.uri nor MLFLOW_TRACKING_URI names one."""
        return f"{self.mlflow_root}/mlflow.db"

    @property
    def mlflow_artifacts(self) -> str:
        """The local store's artifact folder, set explicitly (MLflow would otherwise write ./mlruns wherever a job
        runs)."""
        return f"{self.mlflow_root}/artifacts"

    def registry_cache(self, registered_model: str, version: str) -> str:
        """A registered version's files, downloaded once and checked like any model file before scoring."""
        return f"{self.mlflow_root}/cache/{registered_model}/{version}"


def drift_baseline_of(train_split: str) -> str:
    """Where the drift baseline of a training split is kept: beside it (<data>/drift_baseline.json for
    <data>/train), so that a retraining's data set has its own."""
    return f"{train_split.rstrip('/').rsplit('/', 1)[0]}/drift_baseline.json"


def ingest_hash(cfg: PipelineConfig) -> str:
    from dataclasses import asdict
    return fingerprint_of({"input": cfg.resolve(cfg.paths.input), "data": asdict(cfg.data)})
