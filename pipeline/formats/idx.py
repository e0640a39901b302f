"""The IDX format (MNIST's own): header parsing, structural checks and reading byte ranges of records.

An IDX file is two zero bytes, an element-type byte (0x08: unsigned byte), the number of dimensions, one
big-endian uint32 per dimension, then the data, row-major. Files may be gzip-compressed; we tell from the
content (the gzip magic bytes), not the name, so a misnamed file is still read or rejected for what it is.
"""
from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from pipeline import storage
from pipeline.errors import PipelineError

GZIP_MAGIC = b"\x1f\x8b"
UNSIGNED_BYTE = 0x08
HEAD_BYTES = 64          # enough of the (decompressed) start of a file to hold any sensible IDX header
CHUNK = 4 << 20


@dataclass(frozen=True)
class IdxHeader:
    dims: tuple[int, ...]

    @property
    def size(self) -> int:
        """Header length in bytes: where the first record starts."""
        return 4 + 4 * len(self.dims)

    @property
    def count(self) -> int:
        return self.dims[0]

    @property
    def record_size(self) -> int:
        return math.prod(self.dims[1:])

    @property
    def data_size(self) -> int:
        return self.size + self.count * self.record_size


def parse_header(name: str, head: bytes) -> IdxHeader:
    """The header at the start of `head` (decompressed bytes of file `name`); PipelineError when it is not IDX."""
    if not head:
        raise PipelineError(f"{name}: file is empty")
    if len(head) < 4 or head[:2] != b"\x00\x00":
        raise PipelineError(f"{name}: not an IDX file (magic number 0x{head[:4].hex()} should start with 0000)")
    if head[2] != UNSIGNED_BYTE:
        raise PipelineError(f"{name}: IDX element type 0x{head[2]:02x} is not unsigned byte (0x08)")
    ndim = head[3]
    if ndim == 0 or len(head) < 4 + 4 * ndim:
        raise PipelineError(f"{name}: IDX header with {ndim} dimensions is truncated or invalid")
    return IdxHeader(struct.unpack(f">{ndim}I", head[4:4 + 4 * ndim]))


def check_images(name: str, header: IdxHeader, length: int, height: int, width: int) -> None:
    """Images file: count x height x width unsigned bytes, and exactly the bytes the header promises."""
    if len(header.dims) != 3 or header.dims[1:] != (height, width):
        shape = "x".join(str(d) for d in header.dims[1:]) or "no image dimensions"
        raise PipelineError(f"{name}: images are {shape}, expected {height}x{width} (IDX dims {header.dims})")
    _check_length(name, header, length)


def check_labels(name: str, header: IdxHeader, length: int) -> None:
    if len(header.dims) != 1:
        raise PipelineError(f"{name}: labels file has {len(header.dims)} dimensions, expected 1 (IDX dims "
                            f"{header.dims})")
    _check_length(name, header, length)


def check_pair(images: str, image_header: IdxHeader, labels: str, label_header: IdxHeader) -> None:
    if image_header.count != label_header.count:
        raise PipelineError(f"{images} has {image_header.count} images but {labels} has {label_header.count} labels")


def _check_length(name: str, header: IdxHeader, length: int) -> None:
    expected = header.data_size
    if length < expected:
        raise PipelineError(f"{name}: truncated: header promises {header.count} records ({expected} bytes) but only "
                            f"{length} bytes are present")
    if length > expected:
        raise PipelineError(f"{name}: padded: {length - expected} bytes after the {header.count} records the "
                            f"header promises")


def scan(path: str) -> dict:
    """Executor side: sha256 of the file as stored, whether it is gzip, its decompressed length and first bytes.

    The whole file streams through once in constant memory; problems come back as data (`error`) so the driver
    can name them, instead of failing inside a Spark task.
    """
    fs, p = storage.filesystem(path)
    sha, size, out = hashlib.sha256(), 0, _Decoded()
    try:
        with fs.open_input_stream(p, compression=None) as src:
            for chunk in iter(lambda: src.read(CHUNK), b""):
                sha.update(chunk)
                size += len(chunk)
                out.feed(chunk)
        out.finish()
    except (zlib.error, EOFError) as exc:
        out.error = f"corrupt gzip data ({exc})"
    return {"path": path, "bytes": size, "sha256": sha.hexdigest(), "compressed": out.compressed,
            "length": out.length, "head": out.head.hex(), "error": out.error}


class _Decoded:
    """Streams a file's bytes through gzip decompression when it starts with the gzip magic; counts the output."""

    def __init__(self) -> None:
        self.compressed: bool | None = None
        self.length = 0
        self.head = b""
        self.error: str | None = None
        self._inflate = None

    def feed(self, chunk: bytes) -> None:
        if self.compressed is None:
            self.compressed = chunk[:2] == GZIP_MAGIC
        if self.compressed:
            chunk = self._decompress(chunk)
        self.length += len(chunk)
        if len(self.head) < HEAD_BYTES:
            self.head += chunk[:HEAD_BYTES - len(self.head)]

    def _decompress(self, chunk: bytes) -> bytes:
        out = []
        while chunk:
            if self._inflate is None or self._inflate.eof:   # a further gzip member, as `cat a.gz b.gz` makes
                self._inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out.append(self._inflate.decompress(chunk))
            chunk = self._inflate.unused_data
        return b"".join(out)

    def finish(self) -> None:
        if self.compressed and self._inflate is not None and not self._inflate.eof:
            self.error = "corrupt gzip data (stream ends before its end marker: truncated download?)"


def read_range(path: str, compressed: bool, offset: int, length: int) -> bytes:
    """Executor side: `length` decompressed bytes from `offset`. Plain files seek; gzip streams decompress and skip."""
    fs, p = storage.filesystem(path)
    if not compressed:
        with fs.open_input_file(p) as src:
            src.seek(offset)
            return src.read(length)
    with fs.open_input_stream(p, compression="gzip") as src:
        while offset > 0:
            skipped = len(src.read(min(offset, CHUNK)))
            if skipped == 0:
                break
            offset -= skipped
        return src.read(length)


def read_array(path: str | os.PathLike) -> np.ndarray:
    """A whole IDX file (gzip or plain, told from its content) as a uint8 array of the shape its header declares,
    checked like ingest checks it (PipelineError naming the file). For files that fit in memory: tests,
    benchmarks, a notebook; the stages read record ranges on executors instead."""
    path = os.fspath(path)
    name = path.rsplit("/", 1)[-1]
    fs, p = storage.filesystem(path)
    with fs.open_input_stream(p, compression=None) as src:   # not told from the name: see the module docstring
        data = src.read()
    if data[:2] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise PipelineError(f"{name}: corrupt gzip data ({exc})") from None
    header = parse_header(name, data[:HEAD_BYTES])
    _check_length(name, header, len(data))
    return np.frombuffer(data, dtype=np.uint8, offset=header.size).reshape(header.dims)
