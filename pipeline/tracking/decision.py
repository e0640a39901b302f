"""The one promotion rule: which model serves tomorrow, decided on all the evidence, condition by condition.

The challenger replaces the champion in service only when every condition that applies holds:

1. target: its test accuracy is at least evaluate.target_accuracy;
2. test set: with a champion, its test accuracy beats the champion's on the same untouched test set by at least
   tracking.promotion_margin (strictly, when the margin is 0);
3. newest batches: with a champion and labelled newest batches (retraining, retrain.newest_days), its accuracy
   on them is not below the champion's by more than their sampling error, one standard error of the champion's
   accuracy on that many images, sqrt(p (1 - p) / n), and never less than one image in n: 200 images at 98%
   allow 0.99 points, 40 images at 100% allow 2.5 points (one image).

The first model ever is promoted when it meets the target. Pure: no registry, no Spark. `make run`'s evaluation
(conditions 1 and 2) and the weekly retraining (all three) decide here; pipeline.tracking.registry applies it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from pipeline.fingerprint import fingerprint_of


@dataclass(frozen=True)
class Figures:
    """A model's accuracy on one labelled set, and on how many images it was measured."""
    accuracy: float | None
    images: int


@dataclass(frozen=True)
class Evidence:
    """One side of the decision: a registered version (None for a champion that does not exist yet) and its
    figures on the test set and, when scored there, on the newest labelled batches."""
    version: str | None
    test: Figures
    newest: Figures | None = None


@dataclass(frozen=True)
class Condition:
    name: str                 # target | test_set | newest_batches
    passed: bool | None       # None: does not apply to this decision
    detail: str               # one line


@dataclass(frozen=True)
class Verdict:
    promoted: bool
    reason: str               # one line: why, naming the first condition that failed
    conditions: tuple[Condition, ...] = field(default=())

    def to_dict(self) -> dict:
        return {"promoted": self.promoted, "reason": self.reason,
                "conditions": [asdict(condition) for condition in self.conditions]}


def newest_allowance(champion_accuracy: float, images: int) -> float:
    """How far below the champion the challenger may score on `images` newest images: one standard error of the
    champion's accuracy there, and at least one image's worth."""
    p = min(max(champion_accuracy, 0.0), 1.0)
    return max(math.sqrt(p * (1 - p) / images), 1 / images)


def decide(challenger: Evidence, champion: Evidence | None, target: float, margin: float) -> Verdict:
    """The verdict of the rule above on this evidence."""
    conditions = (_target(challenger, target), _test_set(challenger, champion, margin),
                  _newest_batches(challenger, champion))
    failed = next((c for c in conditions if c.passed is False), None)
    if failed is not None:
        return Verdict(False, failed.detail, conditions)
    if champion is None:
        return Verdict(True, f"{conditions[0].detail} and there is no champion yet", conditions)
    return Verdict(True, "; ".join(c.detail for c in conditions if c.passed), conditions)


def _target(challenger: Evidence, target: float) -> Condition:
    accuracy = challenger.test.accuracy or 0.0
    text = f"challenger test accuracy {accuracy:.4f}"
    if accuracy >= target:
        return Condition("target", True, f"{text} meets the target {target:.4f}")
    return Condition("target", False, f"{text} is below the target {target:.4f}")


def _test_set(challenger: Evidence, champion: Evidence | None, margin: float) -> Condition:
    if champion is None:
        return Condition("test_set", None, "there is no champion yet")
    ours, theirs = challenger.test.accuracy or 0.0, champion.test.accuracy or 0.0
    gain = ours - theirs
    versus = (f"the champion's {theirs:.4f} on the same {champion.test.images} test images ({gain:+.4f}; "
              f"margin {margin:.4f})")
    if gain > 0 and gain >= margin - 1e-12:  # a tolerance for accuracies that differ in the last bits only
        return Condition("test_set", True, f"beats {versus}")
    return Condition("test_set", False, f"challenger test accuracy {ours:.4f} does not beat {versus}")


def _newest_batches(challenger: Evidence, champion: Evidence | None) -> Condition:
    if champion is None:
        return Condition("newest_batches", None, "no champion to compare on the newest batches")
    ours, theirs = challenger.newest, champion.newest
    if ours is None or theirs is None or not ours.images or ours.accuracy is None or theirs.accuracy is None:
        return Condition("newest_batches", None, "no labelled newest batches to compare on")
    allowance = newest_allowance(theirs.accuracy, ours.images)
    drop = theirs.accuracy - ours.accuracy
    text = (f"on the {ours.images} newest labelled images the challenger's {ours.accuracy:.4f} against the "
            f"champion's {theirs.accuracy:.4f}")
    if drop <= 0:
        return Condition("newest_batches", True, f"{text}: not lower")
    if drop <= allowance + 1e-12:
        return Condition("newest_batches", True, f"{text} is lower by {drop:.4f}, within their sampling error "
                                                 f"{allowance:.4f}")
    return Condition("newest_batches", False, f"{text} is lower by {drop:.4f}, more than their sampling error "
                                              f"{allowance:.4f}")


def decision_key(context: str, challenger_version: str) -> str:
    """What a decision is taken once for: the challenger's version and the evidence it is judged on (`context`:
    the evaluation's fingerprint, or the retraining's run and newest batches). A retried task finds the decision
    it took before under this key, however the champion alias moved since."""
    return fingerprint_of({"context": context, "challenger": challenger_version})
