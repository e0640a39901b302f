"""File I/O at the edges: JSON and text files, existence checks, atomic publication of output folders and of
Parquet data sets.

Paths are local paths or Hadoop-style URIs (file://, hdfs://, s3a://); pyarrow's filesystems serve both,
so every stage writes through here and the same code runs on a laptop and on a cluster.
"""
from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pyarrow import fs as pafs

from pipeline.config import refuse_uri_password
from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem serving `path`, and the path as that filesystem names it."""
    if "://" not in path:
        return pafs.LocalFileSystem(), path
    uri = refuse_uri_password(path, "path").replace("s3a://", "s3://", 1)
    return pafs.FileSystem.from_uri(uri)


def exists(path: str) -> bool:
    fs, p = filesystem(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def is_dir(path: str) -> bool:
    fs, p = filesystem(path)
    return fs.get_file_info(p).type == pafs.FileType.Directory


def makedirs(path: str) -> None:
    fs, p = filesystem(path)
    fs.create_dir(p, recursive=True)


def remove(path: str) -> None:
    """Remove a file or folder if present."""
    _remove_on(*filesystem(path))


def remove_files_except(folder: str, keep: set[str]) -> None:
    """Remove the files directly in `folder` whose paths are not in `keep` (what failed task attempts wrote)."""
    fs, p = filesystem(folder)
    names = {path.rsplit("/", 1)[-1] for path in keep}
    for info in fs.get_file_info(pafs.FileSelector(p, allow_not_found=True)):
        if info.type == pafs.FileType.File and info.base_name not in names:
            fs.delete_file(info.path)


def _remove_on(fs: pafs.FileSystem, p: str) -> None:
    info = fs.get_file_info(p)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(p)
    elif info.type == pafs.FileType.File:
        fs.delete_file(p)


def write_text(path: str, text: str) -> None:
    """Write `text` to `path` atomically: readers see the old file or the whole new one."""
    fs, p = filesystem(path)
    parent = p.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    tmp = f"{p}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open_output_stream(tmp) as out:
        out.write(text.encode())
    fs.move(tmp, p)


def read_text(path: str) -> str:
    fs, p = filesystem(path)
    with fs.open_input_stream(p) as src:
        return src.read().decode()


def write_json(path: str, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str) -> Any:
    return json.loads(read_text(path))


def read_json_if_valid(path: str) -> Any | None:
    """The JSON at `path`, or None when it is missing or unreadable (a file cut short by a killed writer)."""
    if not exists(path):
        return None
    try:
        return read_json(path)
    except (ValueError, OSError):
        return None


def job_for(stage: str) -> str:
    """The job that runs stage `stage` (every registered stage has one: tests/test_run.py)."""
    return f"jobs/{stage}.py"


def require_stage_output(path: str, stage: str, otherwise: str | None = None) -> None:
    """Fail in one line when `path`, written by stage `stage`, is missing: which job to run first (`otherwise`:
    another way out, e.g. 'pass --input')."""
    job = job_for(stage)
    if not exists(path):
        alternative = f", or {otherwise}" if otherwise else ""
        raise PipelineError(f"{path} not found: run {job} first{alternative}")


def read_stage_output(path: str, stage: str, otherwise: str | None = None) -> dict:
    """The JSON object stage `stage` wrote at `path`; missing or damaged (cut short, not an object), one line
    saying which job to run."""
    require_stage_output(path, stage, otherwise)
    try:
        value = read_json(path)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise PipelineError(f"{path} is damaged (not a JSON object): rerun {job_for(stage)}")
    return value


def read_bytes(path: str) -> bytes:
    fs, p = filesystem(path)
    with fs.open_input_stream(p) as src:
        return src.read()


def write_bytes(path: str, data: bytes) -> None:
    fs, p = filesystem(path)
    fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(p) as out:
        out.write(data)


@contextmanager
def publishing(final_path: str) -> Iterator[str]:
    """Yield a temporary sibling of `final_path` to write into; on success it replaces `final_path` in one move.

    On failure the temporary folder is removed, so a later stage never reads a half-written output. Under the
    output's lock (pipeline.locks), what killed earlier attempts left beside `final_path` is cleaned up first.
    """
    final_path = final_path.rstrip("/")
    if _under_lock(final_path):
        remove_leftovers(final_path)
    attempt = uuid.uuid4().hex[:8]
    tmp = f"{final_path}.tmp-{attempt}"
    try:
        yield tmp
    except BaseException:
        remove(tmp)
        raise
    fs, final = filesystem(final_path)
    _, tmp_p = filesystem(tmp)
    if fs.get_file_info(final).type != pafs.FileType.NotFound:
        old = f"{final}.old-{attempt}"
        fs.move(final, old)
        fs.move(tmp_p, final)
        _remove_on(fs, old)
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
    fs, final = filesystem(final_path.rstrip("/"))
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
        _remove_on(fs, info.path)
        log.info("removed %s, left beside %s by an earlier attempt that was killed", info.base_name, final_path)


def _under_lock(path: str) -> bool:
    from pipeline import locks  # imported here: locks is built on this module
    return locks.holds(path)


def is_complete(manifest_path: str, fingerprint: str) -> bool:
    """True when a stage's manifest exists and was written for the same inputs and config (`fingerprint`)."""
    manifest = read_json_if_valid(manifest_path)
    return isinstance(manifest, dict) and manifest.get("fingerprint") == fingerprint
