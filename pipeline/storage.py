"""The store: file I/O at the edges, for local paths and Hadoop-style URIs (file://, hdfs://, s3a://) alike.
pyarrow's filesystems serve both, so every stage reads and writes through here and the same code runs on a laptop
and on a cluster. pipeline.paths tells the two kinds apart; pipeline.outputs builds the publication of whole
output folders on this module and pipeline.locks (storage <- locks <- outputs, no cycle).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO

from pyarrow import fs as pafs

from pipeline.paths import local_path
from pipeline.redaction import refuse_uri_password


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem serving `path`, and the path as that filesystem names it."""
    local = local_path(path)
    if local is not None:
        return pafs.LocalFileSystem(), local
    return remote_filesystem(refuse_uri_password(path, "path").replace("s3a://", "s3://", 1))


def remote_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The file system of a remote URI (hdfs://, s3://) and the path in it, as pyarrow resolves it."""
    return pafs.FileSystem.from_uri(uri)


def parquet_dataset(path: str):
    """The Parquet under `path` (one file, or a folder of part files: names starting with '.' or '_' are Spark's
    and skipped) as one pyarrow dataset, read through the store."""
    import pyarrow.parquet as pq
    fs, p = filesystem(path)
    return pq.ParquetDataset(p, filesystem=fs, use_legacy_dataset=False)


def parquet_files(path: str) -> list[tuple[str, list[int]]]:
    """Each Parquet file under `path` (as parquet_dataset finds them) named as the store names it, so that another
    process can open it (open_parquet), with the row count of each of its row groups."""
    dataset = parquet_dataset(path)
    _, root = filesystem(path)
    # The dataset names files in its file system's terms ('bucket/key', '/folder/file'): `path` minus that root is
    # the scheme (and authority) to put back.
    prefix = path.rstrip("/")[:len(path.rstrip("/")) - len(root.rstrip("/"))]
    return [(prefix + fragment.path, [fragment.metadata.row_group(g).num_rows
                                      for g in range(fragment.metadata.num_row_groups)])
            for fragment in dataset.fragments]


def open_parquet(path: str):
    """A pyarrow ParquetFile for a file named as parquet_files names it."""
    import pyarrow.parquet as pq
    fs, p = filesystem(path)
    return pq.ParquetFile(fs.open_input_file(p))


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
    remove_on(*filesystem(path))


def remove_files_except(folder: str, keep: set[str]) -> None:
    """Remove the files directly in `folder` whose paths are not in `keep` (what failed task attempts wrote)."""
    fs, p = filesystem(folder)
    names = {path.rsplit("/", 1)[-1] for path in keep}
    for info in fs.get_file_info(pafs.FileSelector(p, allow_not_found=True)):
        if info.type == pafs.FileType.File and info.base_name not in names:
            fs.delete_file(info.path)


def remove_on(fs: pafs.FileSystem, p: str) -> None:
    """remove() for a path already resolved to its file system."""
    info = fs.get_file_info(p)
    if info.type == pafs.FileType.Directory:
        fs.delete_dir(p)
    elif info.type == pafs.FileType.File:
        fs.delete_file(p)


@contextmanager
def writing(path: str) -> Iterator[BinaryIO]:
    """A stream to write the file `path` through, atomically: readers see the old file or the whole new one, and
    a writer that fails or is killed leaves `path` as it was."""
    fs, p = filesystem(path)
    fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
    tmp = f"{p}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        with fs.open_output_stream(tmp) as out:
            yield out
        fs.move(tmp, p)
    except BaseException:
        remove_on(fs, tmp)
        raise


def write_text(path: str, text: str) -> None:
    """Write `text` to `path` atomically."""
    write_bytes(path, text.encode())


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


def read_bytes(path: str) -> bytes:
    fs, p = filesystem(path)
    with fs.open_input_stream(p) as src:
        return src.read()


def write_bytes(path: str, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with writing(path) as out:
        out.write(data)


@contextmanager
def local_file(path: str) -> Iterator[str]:
    """`path` as a local file with the same base name, for the libraries that read local files only (Keras,
    MLflow's uploads): the file itself when it is local, else a temporary copy removed afterwards."""
    local = local_path(path)
    if local is not None:
        yield local
        return
    folder = tempfile.mkdtemp(prefix="store-copy-")
    try:
        copy = os.path.join(folder, path.rstrip("/").rsplit("/", 1)[-1])
        with open(copy, "wb") as out:
            out.write(read_bytes(path))
        yield copy
    finally:
        shutil.rmtree(folder, ignore_errors=True)
