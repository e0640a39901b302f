"""What every stage returns (the stage contract of pipeline/stages.py), below the stages so that they can use it."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class StageResult:
    """What every stage returns, and what the run manifest records for it."""
    skipped: bool                                          # the output was complete: nothing was redone
    outputs: dict[str, str]                                # what it wrote (or found complete): name -> path
    counts: dict[str, Any] = field(default_factory=dict)   # rows, images or models, by what they count
    details: dict[str, Any] = field(default_factory=dict)  # the stage's own figures (accuracy, best model, ...)
    seconds: float = 0.0                                   # wall time, filled in by the runner

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary_line(self, stage: str) -> str:
        """`stage train: done in 61.2s | models=3, model_1 val_accuracy=0.9810, ...`: the result on one log line."""
        state = "skipped (output complete)" if self.skipped else "done"
        figures = [f"{k}={v}" for k, v in {**self.counts, **self.details}.items()
                   if isinstance(v, int | float | str | bool)]
        figures += [f"{k} val_accuracy={v['val_accuracy']:.4f}" for k, v in self.details.items()
                    if isinstance(v, dict) and isinstance(v.get("val_accuracy"), float)]  # training: one per model
        return f"stage {stage}: {state} in {self.seconds:.1f}s | {', '.join(figures[:8]) or '-'}"
