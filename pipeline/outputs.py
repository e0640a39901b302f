"""Stage outputs: the job that writes each, one-line errors when one is missing or damaged, completeness by
fingerprint, and the atomic publication of whole output folders and Parquet data sets, which cleans up after killed
attempts when the caller holds the output's lock (pipeline.locks). Built on the store (pipeline.storage).
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from pyarrow import fs as pafs

from pipeline import locks, storage
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)


def job_for(stage: str) -> str:
    """The job that runs stage `stage` (every registered stage has one: tests/test_run.py)."""
    return f"jobs/{stage}.py"


def require_stage_output(path: str, stage: str, otherwise: str | None = None) -> None:
    """Fail in one line when `path`, written by stage `stage`, is missing: which job to run first (`otherwise`:
    another way out, e.g. 'pass --input')."""
    job = job_for(stage)
    if not storage.exists(path):
        alternative = f", or {otherwise}" if otherwise else ""
        raise PipelineError(f"{path} not found: run {job} first{alternative}")


def read_stage_output(path: str, stage: str, otherwise: str | None = None) -> dict:
    """The JSON object stage `stage` wrote at `path`; missing or damaged (cut short, not an object), one line
    saying which job to run."""
    require_stage_output(path, stage, otherwise)
    try:
        value = storage.read_json(path)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise PipelineError(f"{path} is damaged (not a JSON object): rerun {job_for(stage)}")
    return value


@contextmanager
def publishing(final_path: str) -> Iterator[str]:
    """Yield a temporary sibling of `final_path` to write into; on success it replaces `final_path` in one move.

    On failure the temporary folder is removed, so a later stage never reads a half-written output. Under the
    output's lock (pipeline.locks), what killed earlier attempts left beside `final_path` is cleaned up first.
    """
    final_path = final_path.rstrip("/")
    if locks.holds(final_path):
        remove_leftovers(final_path)
    attempt = uuid.uuid4().hex[:8]
    tmp = f"{final_path}.tmp-{attempt}"
    try:
        yield tmp
    except BaseException:
        storage.remove(tmp)
        raise
    fs, final = storage.filesystem(final_path)
    _, tmp_p = storage.filesystem(tmp)
    if fs.get_file_info(final).type != pafs.FileType.NotFound:
        old = f"{final}.old-{attempt}"
        fs.move(final, old)
        fs.move(tmp_p, final)
        storage.remove_on(fs, old)
    else:
        fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
        fs.move(tmp_p, final)


def write_parquet(df: DataFrame, path: str, rows_per_file: int) -> None:
    """Publish `df` at `path` atomically, at most `rows_per_file` rows per file, hence per row group.

    Petastorm shards a dataset by row group, so every Horovod rank needs several: bounding the rows per file is
    the one setting that fixes the row-group size exactly (parquet.block.size is bytes and only approximate).
    """
    with publishing(path) as tmp:
        df.write.mode("error").option("maxRecordsPerFile", rows_per_file).parquet(tmp)


def remove_leftovers(final_path: str) -> None:
    """Remove the `<final>.tmp-*` and `<final>.old-*` that publishes of `final_path` killed midway left behind.

    Only for a caller holding the output's lock: without it, a `.tmp-*` may be another writer's live folder.
    """
    final_path = final_path.rstrip("/")
    fs, final = storage.filesystem(final_path)
    parent, name = final.rsplit("/", 1)
    siblings = fs.get_file_info(pafs.FileSelector(parent, allow_not_found=True))
    leftovers = [i for i in siblings if i.base_name.startswith((f"{name}.tmp-", f"{name}.old-"))]
    olds = sorted((i for i in leftovers if i.base_name.startswith(f"{name}.old-")), key=lambda i: i.mtime_ns or 0)
    if olds and fs.get_file_info(final).type == pafs.FileType.NotFound:
        # Killed between its two moves: the previous output (complete, it had been published) sits in .old-*
        # and the new one never arrived. Restore the previous one rather than promote the .tmp-*, which was
        # never published: if this attempt fails too, readers find what they had before the killed attempt.
        restored = olds[-1]
        fs.move(restored.path, final)
        leftovers = [info for info in leftovers if info is not restored]
        log.warning("%s was missing after a publish killed midway: restored it from %s", final_path,
                    restored.base_name)
    for info in leftovers:
        storage.remove(f"{final_path.rsplit('/', 1)[0]}/{info.base_name}")
        log.info("removed %s, left beside %s by an earlier attempt that was killed", info.base_name, final_path)


def is_complete(manifest_path: str, fingerprint: str) -> bool:
    """True when a stage's manifest exists and was written for the same inputs and config (`fingerprint`)."""
    manifest = storage.read_json_if_valid(manifest_path)
    return isinstance(manifest, dict) and manifest.get("fingerprint") == fingerprint
