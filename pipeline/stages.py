"""The one list of stages. Each is registered once: its name, what it does, what it reads and writes, its own
options and the function that runs it. The jobs in jobs/, the main job (pipeline.run), `--from` and the report's
pipeline-structure table all read this registry instead of restating it.

Every stage function has the same shape, `run(spark, cfg, layout, force=False, **options) -> StageResult`, where
`options` are exactly the stage's declared `StageOption`s (and `force` is left out for the stages that redo their
work every time). The scheduled batches' stages (DAILY_STAGES) work on one day: their functions also take
`ds="YYYY-MM-DD"` and their jobs take --ds instead of --run-id; the main job does not run them, nor the weekly
retraining (RETRAINING_STAGES), which runs the train and evaluate stages itself on the labelled batches up to a
day. Functions are named by import path and imported when the stage runs, so `--help` and config errors never pay
for TensorFlow's import.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.errors import PipelineError
from pipeline.layout import SPLITS, BatchReportFiles, Layout
from pipeline.outputs import job_for
from pipeline.result import StageResult


@dataclass(frozen=True)
class StageOption:
    """An option of one stage's job, passed to its function as the keyword `name`."""
    name: str
    help: str
    default: str | None = None
    flag: str = ""                        # the command-line flag, when not --<name>

    @property
    def cli_flag(self) -> str:
        return self.flag or f"--{self.name.replace('_', '-')}"


# The data the stages pass on, each named once, with where it lives (for the report's structure table). A stage
# declares the names it reads and writes; `--from` follows them to every stage downstream.
PRODUCTS: dict[str, Callable[[Layout], str]] = {
    "input": lambda lay: lay.input_dir,
    "raw": lambda lay: f"{lay.raw}, {lay.quarantine}, {lay.validation_report}",
    "curated": lambda lay: ", ".join(lay.curated(s) for s in SPLITS),
    "eda": lambda lay: lay.eda,
    "models": lambda lay: lay.model_dir("<model>"),
    "evaluation": lambda lay: lay.evaluation,
    "predictions": lambda lay: lay.prediction_dir("<input name>"),
    "report": lambda lay: f"{lay.report_md}, {lay.report_html}",
    "landing day": lambda lay: f"{lay.landing_root}/ds=<date>",
    "registry": lambda lay: "the model registry (champion, versions)",
    "scored day": lambda lay: f"{lay.batches_root}/{{images,quarantine,predictions,reports}}/ds=<date>",
    "drift baseline": lambda lay: lay.drift_baseline,
    "drift record": lambda lay: _reports_of_any_day(lay).drift,
    "day report": lambda lay: f"{_reports_of_any_day(lay).report_md}, {_reports_of_any_day(lay).report_html}",
    "labelled days": lambda lay: f"{lay.batches_root}/images/ds=<date and before>, "
                                 f"{lay.landing_root}/ds=<date and before>/labels.csv",
    "retraining": lambda lay: f"{lay.batches_root}/retrain/ds=<date>",
}


@dataclass(frozen=True)
class Stage:
    name: str
    summary: str                          # one line: what the stage does
    function: str                         # "module:function" implementing the stage contract
    inputs: tuple[str, ...]               # PRODUCTS it reads
    outputs: tuple[str, ...]              # PRODUCTS it writes
    options: tuple[StageOption, ...] = ()
    per_run: bool = True                  # writes into the run folder (so its job takes --run-id)
    skips_complete: bool = True           # skips when its output is complete (so its job takes --force)
    per_date: bool = False                # works on one day of the scheduled batches (so its job takes --ds)
    also_reads: str = ""                  # what it reads beyond the products, for the docs (an option's input)

    @property
    def job(self) -> str:
        return job_for(self.name)

    @property
    def reads(self) -> str:
        """What it reads, by name: where each lives is in the `writes` of the stage writing it."""
        return ", ".join([*([self.also_reads] if self.also_reads else []), *self.inputs])

    def writes(self, layout: Layout) -> str:
        """What it writes, by name and where: 'curated: <train>, <validation>, <test>'."""
        return "; ".join(f"{product}: {PRODUCTS[product](layout)}" for product in self.outputs)

    def run(self, spark, cfg, layout: Layout, force: bool = False, ds: str | None = None,
            **options: Any) -> StageResult:
        module, function = self.function.split(":")
        unknown = set(options) - {option.name for option in self.options}
        if unknown:
            raise PipelineError(f"stage '{self.name}' has no option '{sorted(unknown)[0]}'")
        if self.per_date:
            if ds is None:
                raise PipelineError(f"stage '{self.name}' runs for one day: pass --ds YYYY-MM-DD")
            options = {**options, "ds": ds}
        elif ds is not None:
            raise PipelineError(f"stage '{self.name}' is not a per-day stage: it takes no --ds")
        run = getattr(importlib.import_module(module), function)
        if self.skips_complete:
            return run(spark, cfg, layout, force=force, **options)
        return run(spark, cfg, layout, **options)  # it redoes its work every time: nothing to force


STAGES: tuple[Stage, ...] = (
    Stage("ingest", "reads IDX (gz or plain), Keras mnist.npz or CSV, checks structure and records, writes the raw "
          "table, the quarantine and the validation report",
          "pipeline.data.ingest:run_ingest", ("input",), ("raw",), per_run=False),
    Stage("prepare", "scales pixels to [0, 1] and splits the training images into train and validation, stratified "
          "by a seeded hash of the record id; the test images stay as they are",
          "pipeline.data.prepare:run_prepare", ("raw",), ("curated",), per_run=False),
    Stage("eda", "label distribution, pixel statistics, mean images, drift between splits, figures",
          "pipeline.eda.stage:run_eda", ("curated",), ("eda",), per_run=False),
    Stage("train", "trains the configured CNNs data-parallel with Horovod on Spark, each rank reading its Petastorm "
          "shard of the curated Parquet",
          "pipeline.train.stage:run_training", ("curated",), ("models",),
          options=(StageOption("model", "one model of train.models, or all (default)", "all"),)),
    Stage("evaluate", "scores every trained model on the untouched test set, compares them, records the best and "
          "gates on the target accuracy",
          "pipeline.evaluate.stage:run_evaluation", ("curated", "models"), ("evaluation",)),
    Stage("predict", "distributed scoring of IDX, npz, CSV, Parquet or a folder of PNG/JPEG images with a saved model",
          "pipeline.predict.stage:run_prediction", ("curated", "models", "evaluation"), ("predictions",),
          options=(StageOption("input_path", "file or folder to score (default: the curated test set)", flag="--input"),
                   StageOption("model", "model name of this run, a .keras file, best (default: predict.model), "
                               "or a registered version: models:/<name>@champion, @challenger, /<version>"),
                   StageOption("output", "output folder (default: <run>/predict/<input name>)")),
          skips_complete=False, also_reads="--input (default: the curated test set)"),
    Stage("report", "writes report.md and a self-contained report.html from the run's outputs",
          "pipeline.report.stage:run_report", ("raw", "curated", "eda", "models", "evaluation", "predictions"),
          ("report",), skips_complete=False),
)

STAGE_NAMES: tuple[str, ...] = tuple(stage.name for stage in STAGES)


def downstream_of(name: str, stages: tuple[Stage, ...] = STAGES) -> set[str]:
    """`name` and every stage that reads what it writes, directly or through others."""
    found, written = {name}, set(stage_named(name).outputs)
    for stage in stages[[s.name for s in stages].index(name) + 1:]:
        if written & set(stage.inputs):
            found.add(stage.name)
            written |= set(stage.outputs)
    return found


def upstream_of(stage: Stage, stages: tuple[Stage, ...]) -> list[str]:
    """The earlier stages of `stages` whose outputs `stage` reads: the ones a scheduler runs it after."""
    earlier = stages[:[s.name for s in stages].index(stage.name)]
    return [s.name for s in earlier if set(s.outputs) & set(stage.inputs)]


def _reports_of_any_day(layout: Layout) -> BatchReportFiles:
    """A day's reports folder with <date> for the day: for the docs only (BatchFiles refuses what is not a date)."""
    return BatchReportFiles(f"{layout.batches_root}/reports/ds=<date>")


# The scheduled batches: one day (ds) at a time, in this order, from the landing folder to the day's report.
# check_drift writes drift.json before it fails, so a scheduler runs batch_report after it whatever its outcome.
DAILY_STAGES: tuple[Stage, ...] = (
    Stage("score_batch", "checks one day's arrivals like ingest (quarantine, validation report) and scores them with "
          "the registry's champion, replacing that day's images, quarantine and predictions partitions",
          "pipeline.batch.score:run_batch_scoring", ("landing day", "registry"), ("scored day",),
          options=(StageOption("model", "models:/<name>@<alias> or models:/<name>/<version>, or a .keras file "
                               "(default: the registry's champion)"),),
          per_run=False, skips_complete=False, per_date=True),
    Stage("check_drift", "compares a day's images and predictions with the training data (pixel statistics, ink, "
          "mean image, predicted classes, low confidence), writes drift.json, fails or warns if one moved",
          "pipeline.batch.drift:run_drift_check", ("scored day", "drift baseline"), ("drift record",),
          per_run=False, skips_complete=False, per_date=True),
    Stage("batch_report", "writes a day's report.md and self-contained report.html: model version, counts, drift "
          "verdict, class distribution, confidence, drift statistics, least confident images",
          "pipeline.batch.batch_report:run_batch_report", ("scored day", "drift record"), ("day report",),
          per_run=False, skips_complete=False, per_date=True),
)

# The weekly retraining, for one day (ds): it decides from the day's evidence, so a scheduler branches on
# decision.json after it (dags/mnist_retraining.py).
RETRAINING_STAGES: tuple[Stage, ...] = (
    Stage("retrain", "adds the labelled batches up to a day to the training data, trains and evaluates a challenger "
          "with the train and evaluate stages, scores it and the champion on the newest labelled batches, then "
          "promotes or keeps the champion by the one rule",
          "pipeline.retrain.job:run_retraining", ("labelled days", "curated", "registry"),
          ("retraining", "registry"), per_run=False,
          options=(StageOption("models", "models to retrain: all or comma-separated names of train.models "
                               "(default: retrain.models)"),),
          per_date=True),
)

ALL_STAGES: tuple[Stage, ...] = (*STAGES, *DAILY_STAGES, *RETRAINING_STAGES)
# The scheduled workflows, by the name their DAG asks for them (pipeline.deployment, dags/).
WORKFLOWS: dict[str, tuple[Stage, ...]] = {"daily": DAILY_STAGES, "retraining": RETRAINING_STAGES}


def stage_named(name: str) -> Stage:
    for stage in ALL_STAGES:
        if stage.name == name:
            return stage
    known = ", ".join(stage.name for stage in ALL_STAGES)
    raise PipelineError(f"unknown stage '{name}' (stages: {known})")
