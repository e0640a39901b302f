"""Keras' `mnist.npz` (x_train, y_train, x_test, y_test): .npy members of a zip, read by record ranges.

Only each member's .npy header goes through the driver (shape, dtype); executors seek inside the member to
their range (`zipfile` seeks in stored members and decompresses-and-skips in deflated ones).
"""
from __future__ import annotations

import hashlib
import math
import zipfile

import numpy as np

from pipeline import storage
from pipeline.errors import PipelineError

MEMBERS = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}
CHUNK = 4 << 20


def scan(path: str) -> dict:
    """Executor side: sha256 of the file and every member's .npy header; problems come back as `error`."""
    fs, p = storage.filesystem(path)
    sha, size = hashlib.sha256(), 0
    with fs.open_input_stream(p, compression=None) as src:
        for chunk in iter(lambda: src.read(CHUNK), b""):
            sha.update(chunk)
            size += len(chunk)
    result = {"path": path, "bytes": size, "sha256": sha.hexdigest(), "members": {}, "error": None}
    if size == 0:
        return {**result, "error": "file is empty"}
    try:
        with fs.open_input_file(p) as raw, zipfile.ZipFile(raw) as archive:
            names = set(archive.namelist())
            for key in [k for pair in MEMBERS.values() for k in pair]:
                if f"{key}.npy" not in names:
                    return {**result, "error": f"has no array '{key}' (holds {', '.join(sorted(names))})"}
                with archive.open(f"{key}.npy") as member:
                    result["members"][key] = _npy_header(member)
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        return {**result, "error": f"not a valid .npz file ({exc})"}
    return result


def _npy_header(member) -> dict:
    version = np.lib.format.read_magic(member)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)
    shape, fortran, dtype = read_header(member)
    return {"shape": list(shape), "fortran": bool(fortran), "dtype": dtype.str, "offset": member.tell()}


def check(name: str, members: dict, height: int, width: int) -> dict[str, int]:
    """Driver side: shapes and dtypes fit images and labels; returns the record count of each split."""
    counts = {}
    for split, (x, y) in MEMBERS.items():
        xs, ys = members[x], members[y]
        for key, info in ((x, xs), (y, ys)):
            kind = np.dtype(info["dtype"]).kind
            if kind not in "uif" or info["fortran"]:
                raise PipelineError(f"{name}: array '{key}' has dtype {info['dtype']}"
                                    f"{' in Fortran order' if info['fortran'] else ''}: expected numbers, C order")
        if len(xs["shape"]) != 3 or xs["shape"][1:] != [height, width]:
            raise PipelineError(f"{name}: array '{x}' has shape {tuple(xs['shape'])}, expected (n, {height}, {width})")
        if len(ys["shape"]) != 1:
            raise PipelineError(f"{name}: array '{y}' has shape {tuple(ys['shape'])}, expected (n,)")
        if xs["shape"][0] != ys["shape"][0]:
            raise PipelineError(f"{name}: '{x}' has {xs['shape'][0]} images but '{y}' has {ys['shape'][0]} labels")
        counts[split] = xs["shape"][0]
    return counts


def read_range(path: str, member: str, info: dict, start: int, count: int) -> np.ndarray:
    """Executor side: records [start, start + count) of one member, as an array of its own dtype."""
    dtype = np.dtype(info["dtype"])
    row = math.prod(info["shape"][1:]) * dtype.itemsize
    fs, p = storage.filesystem(path)
    with fs.open_input_file(p) as raw, zipfile.ZipFile(raw) as archive, archive.open(f"{member}.npy") as src:
        src.seek(info["offset"] + start * row)
        data = src.read(count * row)
    return np.frombuffer(data, dtype=dtype).reshape(count, *info["shape"][1:])
