"""Retraining for day ds (jobs/retrain.py): labelled batches up to ds join the training data, a challenger is
trained with each model's configured recipe and evaluated by the train and evaluate stages (which register it and
score the champion in service on the same test set, but promote nothing), both are scored on the newest labelled
batches, and then, with all the evidence in, the one promotion rule decides (pipeline.tracking.decision), once per
evidence: decision.json and decision.md say what it saw and why.

Like the main job, this one runs stages, so it sits above them (tests/test_architecture.py). Every step is
idempotent: the training set is rebuilt only when its inputs changed, training resumes from its checkpoints in a
run folder stable per ds and config, evaluation skips when complete, and a finished ds is skipped altogether
(--force redoes it).
"""
from __future__ import annotations

import dataclasses
import logging

from pyspark.sql import SparkSession

from pipeline import storage
from pipeline.config import PipelineConfig
from pipeline.errors import GateError, PipelineError
from pipeline.fingerprint import fingerprint_of
from pipeline.layout import Layout, RetrainingFiles
from pipeline.locks import output_lock
from pipeline.model_ref import registry_uri
from pipeline.result import StageResult
from pipeline.retrain.decision import decision_record, decision_summary, labelled_accuracy, untrained_record
from pipeline.retrain.training_set import BatchDays, assemble_training_set, find_batch_days, labelled_batches
from pipeline.run_ids import retraining_run_id
from pipeline.stages import stage_named

log = logging.getLogger(__name__)

JOB = "retrain"


def retraining_config(cfg: PipelineConfig, models: str | None = None) -> PipelineConfig:
    """`cfg` training only the retrained models (`models`, else retrain.models), each with its configured recipe;
    retrain.epochs, when set, overrides the epochs and nothing else."""
    wanted = models or cfg.retrain.models
    names = list(cfg.train.models) if wanted == "all" else [n.strip() for n in wanted.split(",") if n.strip()]
    unknown = [n for n in names if n not in cfg.train.models]
    if unknown or not names:
        source = "--models" if models else "retrain.models"
        raise PipelineError(f"{source}: unknown model '{unknown[0] if unknown else wanted}' (configured in "
                            f"train.models: {', '.join(cfg.train.models)})")
    epochs = cfg.retrain.epochs
    trained = {n: dataclasses.replace(cfg.train.models[n], epochs=epochs or cfg.train.models[n].epochs)
               for n in names}
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, models=trained),
                               retrain=dataclasses.replace(cfg.retrain, models=",".join(names)))


def retraining_layout(cfg: PipelineConfig, ds: str) -> Layout:
    """The layout of the retraining of `ds` (cfg: a retraining_config): its own run folder, the retraining data's
    train split, the prepared validation and test splits."""
    return Layout.from_config(cfg, retraining_run_id(cfg, ds)).retraining_on(ds)


def run_retraining(spark: SparkSession, cfg: PipelineConfig, layout: Layout, force: bool = False, *, ds: str,
                   models: str | None = None) -> StageResult:
    """Retrain for day `ds`; the result's details are the decision written to decision.json."""
    rcfg = retraining_config(cfg, models)
    layout = retraining_layout(rcfg, ds)  # a run folder per ds and config (not `layout`'s): a retry resumes there
    files = RetrainingFiles(layout.retraining_root)
    with output_lock(files.root, JOB):
        days = find_batch_days(layout, ds)
        if not days.labelled:
            record = untrained_record(ds, layout.run_id, f"no labelled batch up to {ds}: nothing new to train on",
                                      {"skipped_days": days.skipped})
            return published(files, record)
        manifest, _ = assemble_training_set(spark, rcfg, layout, ds, days, force)
        training_data = {key: manifest[key] for key in ("fingerprint", "origins", "labelled_days", "skipped_days")}
        previous = storage.read_json_if_valid(files.decision)
        if not force and finished(previous, layout.run_id, training_data["fingerprint"]):
            log.info("retraining for %s already decided (%s): skipped (use --force to redo)", ds, files.decision)
            return StageResult(True, {"decision": files.decision}, details=previous)
        storage.remove(files.decision)  # a workflow never branches on the decision of other data
        record = challenge(spark, rcfg, layout, ds, days, training_data, force)
        return published(files, record)


def finished(previous: dict | None, run_id: str, fingerprint: str) -> bool:
    return (isinstance(previous, dict) and previous.get("trained") is True and previous.get("run_id") == run_id
            and (previous.get("training_data") or {}).get("fingerprint") == fingerprint)


def challenge(spark: SparkSession, cfg: PipelineConfig, layout: Layout, ds: str, days: BatchDays,
              training_data: dict, force: bool) -> dict:
    """Train and evaluate the challenger (the evaluation scores the champion in service on the same test set),
    score both on the newest labelled batches, then decide once with all of it and apply the decision."""
    if not cfg.tracking.enabled:
        raise PipelineError("retraining promotes through the model registry, and tracking.enabled is false: turn "
                            "tracking on")
    from pipeline.evaluate.promotion import DECIDED_BY_RETRAINING
    from pipeline.tracking import registry, runs
    from pipeline.tracking.decision import Evidence, Figures
    stage_named("train").run(spark, cfg, layout, force=force)
    evaluation = evaluated(spark, cfg, layout, force)
    test_evidence = evaluation.details.get("promotion") or {}
    if test_evidence.get("decided_by") != DECIDED_BY_RETRAINING:
        raise PipelineError(f"the evaluation under {layout.evaluation} holds no evidence for a retraining: rerun "
                            "jobs/retrain.py with --force")
    model = evaluation.details["best_model"]
    name = cfg.tracking.registered_model
    challenger = registry.resolve_model_uri(cfg, registry_uri(name, test_evidence["challenger_version"]))
    on_test = test_evidence["evidence"]
    champion_version = (on_test["champion"] or {}).get("version")
    champion = (None if champion_version is None
                else registry.resolve_model_uri(cfg, registry_uri(name, champion_version)))
    newest = score_newest(spark, cfg, layout, days, None if champion is None else champion.model_file,
                          layout.model_file(model))
    challenger_evidence = Evidence(challenger.version, Figures(**on_test["challenger"]["test"]),
                                   Figures(newest["challenger"]["accuracy"], newest["rows"]))
    champion_evidence = None if champion is None else Evidence(
        champion.version, Figures(**on_test["champion"]["test"]),
        Figures(newest["champion"]["accuracy"], newest["rows"]))
    # What the decision is taken once for (with the challenger's version, which stands for its bytes).
    context = {"run_id": layout.run_id, "training_data": training_data["fingerprint"], "newest_days": newest["days"],
               "newest_labels": [fingerprint_of(storage.read_text(layout.batch_files(day).labels))
                                 for day in newest["days"]]}
    decision = registry.promote(cfg, challenger, challenger_evidence, champion_evidence, context=repr(context))
    record = decision_record(ds, layout.run_id, decision.to_dict(), model, cfg.train.models[model], newest,
                             training_data)
    runs.log_retraining(cfg, record)
    return record


def evaluated(spark: SparkSession, cfg: PipelineConfig, layout: Layout, force: bool) -> StageResult:
    """The evaluate stage's result; a challenger under the target is not a failure here, only not promotable."""
    try:
        return stage_named("evaluate").run(spark, cfg, layout, force=force)
    except GateError as gate:
        log.info("%s", gate)
        return gate.result


def score_newest(spark: SparkSession, cfg: PipelineConfig, layout: Layout, days: BatchDays,
                 champion_file: str | None, challenger_file: str) -> dict:
    """The challenger's and the champion's figures on the newest labelled batches."""
    newest_days = days.newest(cfg.retrain)
    rows = labelled_batches(spark, layout, newest_days).cache()
    try:
        challenger = labelled_accuracy(spark, cfg, rows, challenger_file)
        held = None if champion_file is None else labelled_accuracy(spark, cfg, rows, champion_file)
    finally:
        rows.unpersist()
    log.info("newest batches %s (%d rows): challenger %s, champion %s", ", ".join(newest_days), challenger["rows"],
             challenger["accuracy"], "-" if held is None else held["accuracy"])
    return {"days": newest_days, "rows": challenger["rows"], "in_training_data": not cfg.retrain.hold_out_newest,
            "challenger": challenger, "champion": held}


def published(files: RetrainingFiles, record: dict) -> StageResult:
    storage.write_text(files.decision_summary, decision_summary(record))
    storage.write_json(files.decision, record)   # last: what the DAG branches on
    log.info("retraining for %s: %s (%s)", record["ds"], "promoted" if record["promoted"] else "kept the champion",
             record["reason"])
    return StageResult(False, {"decision": files.decision}, details=record)

