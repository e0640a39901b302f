"""Files of an input that cannot be scored (empty, corrupt, too big, outside the folder): every one is listed with
its reason, in the log and in a CSV file, whether the job fails because of them (the default) or skips them
(predict.skip_unreadable_images=true).

The list is written from Spark rows streamed to the driver one partition at a time, never collected whole.
"""
from __future__ import annotations

import csv
import io
import logging

from pyspark.sql import DataFrame

from pipeline import storage
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

LOGGED_FILES = 100  # the log names this many; the list holds them all


def enforce_policy(unreadable: DataFrame, input_path: str, skip: bool, list_path: str) -> int:
    """The number of unreadable files; unless `skip`, any makes the job fail in one line, the full list written
    to `list_path` (beside the output folder: PredictionFiles.failed_unreadable_list)."""
    count = unreadable.count()
    if count == 0 or skip:
        return count
    first_path, first_reason = write_list(unreadable, list_path)
    raise PipelineError(f"unreadable image {first_path} ({first_reason}); {count} unreadable file(s) in "
                        f"{input_path}, all listed in {list_path} (set predict.skip_unreadable_images=true to "
                        f"skip them)")


def write_list(unreadable: DataFrame, path: str) -> tuple[str, str]:
    """Write (path, reason) rows sorted by path as CSV at `path`, atomically, logging the first LOGGED_FILES;
    return the first row."""
    first, count = None, 0
    with storage.writing(path) as out:
        out.write(_csv_row("path", "reason"))
        for row in unreadable.select("path", "reason").orderBy("path").toLocalIterator():
            out.write(_csv_row(row["path"], row["reason"]))
            first = first or (row["path"], row["reason"])
            count += 1
            if count <= LOGGED_FILES:
                log.warning("unreadable image %s: %s", row["path"], row["reason"])
    if count > LOGGED_FILES:
        log.warning("... and %d more unreadable image(s), all listed in %s", count - LOGGED_FILES, path)
    return first or ("", "")


def _csv_row(*values: str) -> bytes:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerow(values)
    return text.getvalue().encode()
