"""tracking.json in the run folder: which MLflow runs and registered versions hold this run's models.

Train and evaluate are separate jobs; this small record carries the link from one to the next and gives the report
its figures. The store stays the authority: runs are found again by their tags, so a lost record is rebuilt.
"""
from __future__ import annotations

from pipeline import storage
from pipeline.layout import Layout
from pipeline.locks import output_lock


def read(layout: Layout) -> dict:
    record = storage.read_json_if_valid(layout.tracking_record)
    return record if isinstance(record, dict) else {}


def update(layout: Layout, stage: str, **fields) -> dict:
    """Merge `fields` into the record (`models` merged per model), under the record's lock."""
    with output_lock(layout.tracking_record, stage):
        record = read(layout)
        models = {**record.get("models", {}), **fields.pop("models", {})}
        record = {**record, **fields, "models": models}
        storage.write_json(layout.tracking_record, record)
    return record
