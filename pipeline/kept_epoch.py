"""Which epoch of a history.json the saved model holds: shared by training (which writes it), evaluation and the
report (which read it). The study's models keep their last epoch; a recipe may keep the best validation epoch
(pipeline.config.ModelConfig.keep), and history.json then says which epoch that was."""
from __future__ import annotations


def keep_rule(history: dict) -> str:
    """"last" or "best"; a history written before the rule was recorded kept its last epoch."""
    return history.get("keep") or "last"


def kept_record(history: dict) -> dict:
    """The epoch record of the weights in model.keras: `kept_epoch`, else the last epoch ({} without epochs)."""
    epochs = history.get("epochs") or []
    kept = history.get("kept_epoch")
    return next((e for e in epochs if e["epoch"] == kept), epochs[-1] if epochs else {})


def describe_kept(history: dict) -> str:
    """`best validation epoch (9 of 15)` or `last epoch (12 of 12)`: the rule as the report states it."""
    record = kept_record(history)
    rule = "best validation epoch" if keep_rule(history) == "best" else "last epoch"
    return f"{rule} ({record.get('epoch', '-')} of {history.get('epochs_completed', len(history.get('epochs') or []))})"
