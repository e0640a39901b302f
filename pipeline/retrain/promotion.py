"""The seam between retraining and the model registry (pipeline.tracking.registry, issue #14).

Retraining needs three things of the registry, and only these: the champion before the challenger is evaluated
(resolved once to a fixed version, so the newest batches are scored by the model that was in service), the
promotion decision the evaluate stage made by the registry's rule, and a place to record the retraining's
decision. `ModelRegistry` takes them from the registry module, imported when first used; tests pass their own
object with the same three methods.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.config import PipelineConfig
from pipeline.errors import PipelineError
from pipeline.result import StageResult

log = logging.getLogger(__name__)

# What a promotion decision holds (the registry's PromotionDecision.to_dict()).
DECISION_KEYS = ("promoted", "challenger_version", "challenger_accuracy", "champion_version", "champion_accuracy",
                 "target", "margin", "reason")


@dataclass(frozen=True)
class ModelVersion:
    """A registered model version as retraining uses it: the registry's RegisteredVersion has the same fields."""
    name: str
    version: str
    model_file: str      # a local .keras file the scorer loads


class Registry(Protocol):
    def champion(self, cfg: PipelineConfig) -> ModelVersion | None:
        """The version in service now (None before the first promotion)."""

    def decision(self, cfg: PipelineConfig, evaluation: StageResult) -> dict[str, Any]:
        """The promotion decision for the challenger the evaluation chose: DECISION_KEYS."""

    def record(self, cfg: PipelineConfig, decision: dict[str, Any]) -> None:
        """Log the retraining's whole decision (both models on both sets) to the tracking store."""


class ModelRegistry:
    """The MLflow registry of issue #14. Its evaluate stage registers every trained model, marks the best one
    `challenger`, scores the champion on the same test set and promotes by the rule: retraining reads that."""

    def champion(self, cfg: PipelineConfig) -> ModelVersion | None:
        return _registry().champion(cfg)  # one line when tracking (hence the registry) is off

    def decision(self, cfg: PipelineConfig, evaluation: StageResult) -> dict[str, Any]:
        # Integration point: where the registry's evaluate stage leaves PromotionDecision.to_dict() in its result
        # (and in its manifest, so a skipped evaluation returns it too).
        promotion = evaluation.details.get("promotion")
        if not isinstance(promotion, dict):
            raise PipelineError("the evaluation recorded no promotion decision: retraining needs the evaluate stage "
                                "of the model registry (evaluate.details['promotion'])")
        return checked_decision(promotion)

    def record(self, cfg: PipelineConfig, decision: dict[str, Any]) -> None:
        # promote() has logged the promotion itself; this adds both models' figures on the newest batches.
        from pipeline.tracking.runs import log_retraining
        run_id = log_retraining(cfg, decision)
        log.info("retraining decision for %s (MLflow run %s): %s", decision["ds"], run_id, decision["reason"])


def _registry():
    from pipeline.tracking import registry
    return registry


def checked_decision(promotion: dict[str, Any]) -> dict[str, Any]:
    """The decision with every key retraining records, or one line naming the first one missing."""
    missing = [key for key in DECISION_KEYS if key not in promotion]
    if missing:
        raise PipelineError(f"the promotion decision has no '{missing[0]}'")
    return {key: promotion[key] for key in DECISION_KEYS}
