"""A scored day is all one scoring's, or it is not read.

Scoring publishes a day as four folders, one move each: images, quarantine, predictions, then reports (with
scoring.json) last. A kill between two moves would leave folders of two scorings side by side (predictions of one
model beside a scoring.json naming another), and nothing in the folders themselves says so. So every scoring
stamps each table folder with one token (a PUBLICATION_MARKER file) and records it in scoring.json, published
last: a reader trusts the day only when every folder carries the token scoring.json names. The rerun the error
asks for republishes all four.
"""
from __future__ import annotations

import uuid

from pipeline import outputs, storage
from pipeline.errors import PipelineError
from pipeline.layout import PUBLICATION_MARKER, BatchFiles

SCORING_JOB = "score_batch"   # the job that writes a day's images, quarantine, predictions and scoring.json


def new_token() -> str:
    return uuid.uuid4().hex


def stamp(folder: str, token: str) -> None:
    """Mark `folder` (being written, before its move) as part of the scoring `token`."""
    storage.write_text(f"{folder}/{PUBLICATION_MARKER}", token)


def scored_day(files: BatchFiles) -> dict:
    """The day's scoring.json, once every table folder is checked to be of the scoring it names; otherwise one line
    saying which folder is not and what to rerun. Days scored before tokens existed have none anywhere."""
    scoring = outputs.read_stage_output(files.scoring, SCORING_JOB)
    token = scoring.get("publication")
    for name, folder in files.scored_tables.items():
        marker = f"{folder}/{PUBLICATION_MARKER}"
        found = storage.read_text(marker).strip() if storage.exists(marker) else None
        if found != token:
            what = (f"the {name} folder of {files.ds} ({folder}) is missing" if not storage.exists(folder) else
                    f"the {name} of {files.ds} ({folder}) are from another scoring than {files.scoring} records")
            raise PipelineError(f"{what}: a scoring was interrupted between its moves; rerun "
                                f"{outputs.job_for(SCORING_JOB)} --ds {files.ds}")
    return scoring


def check_readable_day(files: BatchFiles) -> None:
    """A day with images and no scoring.json is read only if no scoring stamped it: one written before tokens
    existed, or by hand. Stamped images without scoring.json are a first scoring killed before its last move."""
    if storage.exists(files.scoring):
        scored_day(files)
    elif storage.exists(f"{files.images}/{PUBLICATION_MARKER}"):
        raise PipelineError(f"the images of {files.ds} ({files.images}) have no {files.scoring}: a scoring was "
                            f"interrupted between its moves; rerun {outputs.job_for(SCORING_JOB)} --ds {files.ds}")
