"""After evaluation (tracking on): test metrics logged to every model's MLflow run, the best model marked
`challenger`, and the champion in service scored on THIS run's test set with the same scorer, so the comparison is
fair even when the champion was trained by another profile or on other data.

A run of the main job decides here, by the one rule (pipeline.tracking.decision) on the test set. A retraining's
evaluation decides nothing: it leaves the evidence on the test set to the retraining, which adds the newest
labelled batches and takes the one decision with all of it. Either way the outcome is written to the evaluation
folder (promotion.json) for the report and the retraining."""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict

from pipeline import storage
from pipeline.config import PipelineConfig
from pipeline.layout import Layout
from pipeline.model_ref import registry_uri

log = logging.getLogger(__name__)

DECIDED_BY_RETRAINING = "retraining"


def record_in_registry(cfg: PipelineConfig, layout: Layout, summary: dict, fingerprint: str,
                       score_accuracy: Callable[[str], float]) -> dict:
    """The promotion outcome of this evaluation (`fingerprint`), reached once: a rerun that skips a complete
    evaluation reads it back. `score_accuracy(model_file)` scores the champion on this run's test set when it is
    not one of this run's models."""
    from pipeline.tracking import registry, runs
    from pipeline.tracking.decision import Evidence, Figures
    files = layout.evaluation_files
    earlier = storage.read_json_if_valid(files.promotion)
    if isinstance(earlier, dict) and earlier.get("evaluation_fingerprint") == fingerprint:
        return earlier
    entries = runs.log_evaluation(cfg, layout, summary, files)
    best = summary["best_model"]
    registry.set_challenger(cfg, entries[best]["version"])
    challenger = registry.resolve_model_uri(cfg, registry_uri(cfg.tracking.registered_model, entries[best]["version"]))
    test_count = summary.get("test_count") or _test_count(layout)
    evidence = Evidence(challenger.version, Figures(summary["best_test_accuracy"], test_count))
    current = registry.champion(cfg)
    champion, scored_here = None, False
    if current is not None:
        own = next((m for m, e in entries.items() if e["version"] == current.version), None)
        if own is not None:
            accuracy = summary["models"][own]["test_accuracy"]
        else:
            log.info("scoring the champion, %s version %s, on this run's test set", current.name, current.version)
            accuracy, scored_here = score_accuracy(current.model_file), True
        champion = Evidence(current.version, Figures(accuracy, test_count))
    context = {"challenger_model": best, "champion_scored_on_this_test_set": scored_here,
               "evaluation_fingerprint": fingerprint, "test_count": test_count}
    if layout.retraining_root:
        result = {"decided_by": DECIDED_BY_RETRAINING, "challenger_version": challenger.version,
                  "challenger_accuracy": evidence.test.accuracy,
                  "champion_version": None if current is None else current.version,
                  "champion_accuracy": None if champion is None else champion.test.accuracy,
                  "evidence": {"challenger": asdict(evidence),
                               "champion": None if champion is None else asdict(champion)},
                  **context}
    else:
        decision = registry.promote(cfg, challenger, evidence, champion, context=fingerprint)
        result = {**decision.to_dict(), **context}
    storage.write_json(files.promotion, result)
    return result


def _test_count(layout: Layout) -> int | None:
    manifest = storage.read_json_if_valid(layout.curated_manifest)
    return (manifest or {}).get("counts", {}).get("test") if isinstance(manifest, dict) else None
