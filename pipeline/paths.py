"""The one place that tells a local path from a URI. Every configured or given path is a plain local path, a
file:// URI (local too) or a Hadoop-style URI served by a remote file system (hdfs://, s3a://); the code elsewhere
asks these functions instead of looking for a scheme itself (tests/test_architecture.py).

Plain string functions, no I/O: pipeline.storage builds the file operations on them.
"""
from __future__ import annotations

import os
from pathlib import Path

SCHEME_SEPARATOR = "://"
LOCAL_SCHEME = "file:"  # Spark names local files file:/x, Hadoop and pyarrow file:///x: both are local


def is_uri(path: str) -> bool:
    """True for any URI (file://, hdfs://, s3a://), False for a plain path."""
    return SCHEME_SEPARATOR in path


def local_path(path: str) -> str | None:
    """The local path that `path` names (a plain path, file:///x or Spark's file:/x), or None when a remote file
    system serves it."""
    if path.startswith(f"{LOCAL_SCHEME}//"):
        return path.removeprefix(f"{LOCAL_SCHEME}//")
    if path.startswith(LOCAL_SCHEME):
        return path.removeprefix(LOCAL_SCHEME)
    return None if is_uri(path) else path


def absolute(path: str) -> str:
    """A plain path made absolute, without a trailing slash (Python workers and the Spark JVM may not share the
    driver's working directory); a URI as it is, less a trailing slash."""
    path = path.rstrip("/") or "/"
    return path if is_uri(path) else os.path.abspath(path)


def as_url(path: str) -> str:
    """`path` as a URL, for the libraries that want one (Petastorm, MLflow's artifact location): a plain path
    becomes file:///absolute/path."""
    return path if is_uri(path) else f"{LOCAL_SCHEME}//{os.path.abspath(path)}"


def joined_to(base: str, path: str) -> str:
    """`path` under `base` (a folder or a URI) when it is relative; a URI or an absolute path as it is."""
    if is_uri(path) or Path(path).is_absolute():
        return path
    return f"{base.rstrip('/')}/{path}" if is_uri(base) else str(Path(base) / path)


def within(path: str, folder: str) -> str:
    """`path` relative to `folder`, whichever way each names a local file (plain, file:/, file:///); the base name
    when `path` is not under `folder`."""
    path, folder = local_path(path) or path, local_path(folder) or folder
    prefix = folder.rstrip("/") + "/"
    index = path.find(prefix)
    return path[index + len(prefix):] if index >= 0 else path.rsplit("/", 1)[-1]
