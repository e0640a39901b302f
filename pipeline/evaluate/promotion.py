"""After evaluation (tracking on): test metrics logged to every model's MLflow run, the best model marked
`challenger`, and the promotion decided against the champion scored on THIS run's test set with the same scorer,
so the comparison is fair even when the champion was trained by another profile or on other data. The decision is
written to the evaluation folder (promotion.json) for the report."""
from __future__ import annotations

import logging
from collections.abc import Callable

from pipeline import storage
from pipeline.config import PipelineConfig
from pipeline.layout import Layout

log = logging.getLogger(__name__)


def record_in_registry(cfg: PipelineConfig, layout: Layout, summary: dict, fingerprint: str,
                       score_accuracy: Callable[[str], float]) -> dict:
    """The promotion decision of this evaluation (`fingerprint`), decided once: a rerun that skips a complete
    evaluation reads it back. `score_accuracy(model_file)` scores the champion on this run's test set when it is
    not one of this run's models."""
    from pipeline.tracking import registry, runs
    files = layout.evaluation_files
    earlier = storage.read_json_if_valid(files.promotion)
    if isinstance(earlier, dict) and earlier.get("evaluation_fingerprint") == fingerprint:
        return earlier
    entries = runs.log_evaluation(cfg, layout, summary, files)
    best = summary["best_model"]
    registry.set_challenger(cfg, entries[best]["version"])
    challenger = registry.resolve_model_uri(cfg, f"models:/{cfg.tracking.registered_model}/{entries[best]['version']}")
    current = registry.champion(cfg)
    champion_accuracy, scored_here = None, False
    if current is not None:
        own = next((m for m, e in entries.items() if e["version"] == current.version), None)
        if own is not None:
            champion_accuracy = summary["models"][own]["test_accuracy"]
        else:
            log.info("scoring the champion, %s version %s, on this run's test set", current.name, current.version)
            champion_accuracy, scored_here = score_accuracy(current.model_file), True
    decision = registry.promote(cfg, challenger, summary["best_test_accuracy"], champion_accuracy)
    result = {**decision.to_dict(), "challenger_model": best, "champion_scored_on_this_test_set": scored_here,
              "evaluation_fingerprint": fingerprint, "test_count": _test_count(layout)}
    storage.write_json(files.promotion, result)
    return result


def _test_count(layout: Layout) -> int | None:
    manifest = storage.read_json_if_valid(layout.curated_manifest)
    return (manifest or {}).get("counts", {}).get("test") if isinstance(manifest, dict) else None
