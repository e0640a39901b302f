"""The one list of stages. Each is registered once: its name, what it does, what it reads and writes, its own
options and the function that runs it. The jobs in jobs/, the main job (pipeline.run), `--from` and the report's
pipeline-structure table all read this registry instead of restating it.

Every stage function has the same shape, `run(spark, cfg, layout, force=False, **options) -> StageResult`, where
`options` are exactly the stage's declared `StageOption`s (and `force` is left out for the stages that redo their
work every time). Functions are named by import path and imported when
the stage runs, so `--help` and config errors never pay for TensorFlow's import.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.errors import PipelineError
from pipeline.layout import SPLITS, BatchFiles, Layout
from pipeline.result import StageResult
from pipeline.storage import job_for


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


@dataclass(frozen=True)
class Stage:
    name: str
    summary: str                          # one line: what the stage does
    function: str                         # "module:function" implementing the stage contract
    reads: Callable[[Layout], str]        # for the docs and the report: where its inputs live
    writes: Callable[[Layout], str]       # ... and its outputs
    options: tuple[StageOption, ...] = ()
    per_run: bool = True                  # writes into the run folder (so its job takes --run-id)
    skips_complete: bool = True           # skips when its output is complete (so its job takes --force)

    @property
    def job(self) -> str:
        return job_for(self.name)

    def run(self, spark, cfg, layout: Layout, force: bool = False, **options: Any) -> StageResult:
        module, function = self.function.split(":")
        unknown = set(options) - {option.name for option in self.options}
        if unknown:
            raise PipelineError(f"stage '{self.name}' has no option '{sorted(unknown)[0]}'")
        run = getattr(importlib.import_module(module), function)
        if self.skips_complete:
            return run(spark, cfg, layout, force=force, **options)
        return run(spark, cfg, layout, **options)  # it redoes its work every time: nothing to force


STAGES: tuple[Stage, ...] = (
    Stage("ingest", "reads IDX (gz or plain), Keras mnist.npz or CSV, checks structure and records, writes the raw "
          "table, the quarantine and the validation report",
          "pipeline.data.ingest:run_ingest", lambda lay: lay.input_dir,
          lambda lay: f"{lay.raw}, {lay.quarantine}, {lay.validation_report}", per_run=False),
    Stage("prepare", "scales pixels to [0, 1] and splits the training images into train and validation, stratified "
          "by a seeded hash of the record id; the test images stay as they are",
          "pipeline.data.prepare:run_prepare", lambda lay: lay.raw,
          lambda lay: ", ".join(lay.curated(s) for s in SPLITS), per_run=False),
    Stage("eda", "label distribution, pixel statistics, mean images, drift between splits, figures",
          "pipeline.eda.stage:run_eda", lambda lay: lay.curated_root, lambda lay: lay.eda, per_run=False),
    Stage("train", "trains the configured CNNs data-parallel with Horovod on Spark, each rank reading its Petastorm "
          "shard of the curated Parquet",
          "pipeline.train.stage:run_training",
          lambda lay: f"{lay.curated('train')}, {lay.curated('validation')}", lambda lay: lay.model_dir("<model>"),
          options=(StageOption("model", "one model of train.models, or all (default)", "all"),)),
    Stage("evaluate", "scores every trained model on the untouched test set, compares them, records the best and "
          "gates on the target accuracy",
          "pipeline.evaluate.stage:run_evaluation", lambda lay: f"{lay.curated('test')}, {lay.model_dir('<model>')}",
          lambda lay: lay.evaluation),
    Stage("predict", "distributed scoring of IDX, npz, CSV, Parquet or a folder of PNG/JPEG images with a saved model",
          "pipeline.predict.stage:run_prediction", lambda lay: "--input (default: the curated test set)",
          lambda lay: lay.prediction_dir("<input name>"),
          options=(StageOption("input_path", "file or folder to score (default: the curated test set)", flag="--input"),
                   StageOption("model", "model name of this run, a .keras file, or best (default: predict.model)"),
                   StageOption("output", "output folder (default: <run>/predict/<input name>)")),
          skips_complete=False),
    Stage("report", "writes report.md and a self-contained report.html from the run's outputs",
          "pipeline.report.stage:run_report", lambda lay: "the outputs of every stage above",
          lambda lay: f"{lay.report_md}, {lay.report_html}", skips_complete=False),
)

STAGE_NAMES: tuple[str, ...] = tuple(stage.name for stage in STAGES)

# Per-day stages of the scheduled batches: each job takes --ds (the day, YYYY-MM-DD) and works on that day's
# partitions only. The scheduler runs them, not the main job: they are not part of STAGES.
DAY_OPTION = StageOption("ds", "the day to work on, YYYY-MM-DD (required)")


def _any_day(layout: Layout) -> BatchFiles:
    """A day's paths with `<ds>` for the date: for the docs, never for a real read or write."""
    return BatchFiles(layout.landing_root, layout.batches_root, "<ds>")


BATCH_STAGES: tuple[Stage, ...] = (
    Stage("check_drift", "compares a day's images and predictions with the training data (pixel statistics, ink, "
          "mean image, predicted classes, low confidence), writes drift.json, fails or warns if one moved",
          "pipeline.batch.drift:run_drift_check",
          lambda lay: f"{_any_day(lay).images}, {_any_day(lay).predictions}, {lay.drift_baseline}",
          lambda lay: _any_day(lay).drift, options=(DAY_OPTION,), per_run=False, skips_complete=False),
    Stage("batch_report", "writes a day's report.md and self-contained report.html: model version, counts, drift "
          "verdict, class distribution, confidence, drift statistics, least confident images",
          "pipeline.batch.batch_report:run_batch_report",
          lambda lay: f"{_any_day(lay).scoring}, {_any_day(lay).predictions}, {_any_day(lay).drift}",
          lambda lay: f"{_any_day(lay).report_md}, {_any_day(lay).report_html}",
          options=(DAY_OPTION,), per_run=False, skips_complete=False),
)


def stage_named(name: str) -> Stage:
    for stage in (*STAGES, *BATCH_STAGES):
        if stage.name == name:
            return stage
    known = [stage.name for stage in (*STAGES, *BATCH_STAGES)]
    raise PipelineError(f"unknown stage '{name}' (stages: {', '.join(known)})")
