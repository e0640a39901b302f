"""The CSV form of MNIST: a header `label,pixel0,...,pixel783`, then one image per line.

A scan task per file streams it once (sha256, field count of every line, byte offset of every k-th record),
so parse tasks can seek straight to their records and number them without reading what comes before.
"""
from __future__ import annotations

import hashlib
import io

import numpy as np
import pandas as pd

from pipeline import storage
from pipeline.errors import PipelineError

CHUNK = 8 << 20
NEWLINE, COMMA = 10, 44


def scan(path: str, fields: int, records_per_task: int) -> dict:
    """Executor side: sha256, header, record count, first badly-shaped line and the byte offsets of task starts."""
    fs, p = storage.filesystem(path)
    sha, state = hashlib.sha256(), _LineIndex(fields, records_per_task)
    carry = b""
    with fs.open_input_stream(p, compression=None) as src:
        for chunk in iter(lambda: src.read(CHUNK), b""):
            sha.update(chunk)
            buf = carry + chunk
            cut = buf.rfind(b"\n") + 1
            state.add_lines(buf[:cut])
            carry = buf[cut:]
    if carry:
        state.add_lines(carry + b"\n")
    return {"path": path, "bytes": state.position - (1 if carry else 0), "sha256": sha.hexdigest(),
            "header": state.header, "records": state.records, "offsets": state.offsets,
            "end": state.position - (1 if carry else 0), "bad_line": state.bad_line, "error": None}


class _LineIndex:
    """Counts lines and fields per line with NumPy over whole chunks (no Python loop per line)."""

    def __init__(self, fields: int, records_per_task: int) -> None:
        self.fields, self.per_task = fields, records_per_task
        self.header: str | None = None
        self.records = 0
        self.position = 0
        self.offsets: list[int] = []
        self.bad_line: list[int] | None = None     # [line number (1-based, header is 1), fields found]

    def add_lines(self, part: bytes) -> None:
        data = np.frombuffer(part, dtype=np.uint8)
        ends = np.flatnonzero(data == NEWLINE)
        starts = np.concatenate([[0], ends[:-1] + 1])
        if self.header is None and len(ends):
            self.header = part[:ends[0]].decode("utf-8", "replace").strip()
            starts, ends = starts[1:], ends[1:]
        commas = np.concatenate([[0], np.cumsum(data == COMMA)])
        counts = commas[ends] - commas[starts] + 1
        wrong = np.flatnonzero(counts != self.fields)
        if len(wrong) and self.bad_line is None:
            self.bad_line = [int(self.records + wrong[0] + 2), int(counts[wrong[0]])]
        numbers = self.records + np.arange(len(starts))
        self.offsets += (self.position + starts[numbers % self.per_task == 0]).tolist()
        self.records += len(starts)
        self.position += len(part)


def check(name: str, scanned: dict, fields: int) -> None:
    """Driver side: the header names the label and pixel columns and every line has all its fields."""
    expected = ["label", *[f"pixel{i}" for i in range(fields - 1)]]
    if scanned["header"] is None:
        raise PipelineError(f"{name}: file is empty")
    header = [h.strip().strip('"') for h in scanned["header"].split(",")]
    if header != expected:
        raise PipelineError(f"{name}: header is not label,pixel0,...,pixel{fields - 2} (starts "
                            f"'{scanned['header'][:40]}', {len(header)} columns)")
    if scanned["bad_line"]:
        line, found = scanned["bad_line"]
        raise PipelineError(f"{name}: line {line} has {found} fields, expected {fields}")


def read_range(path: str, byte_start: int, byte_end: int) -> tuple[np.ndarray, np.ndarray, list | None]:
    """Executor side: the lines in [byte_start, byte_end) as float64 (pixels, labels; NaN where missing) and, only
    when some field is not a number, each record's first such field described (None for the other records)."""
    fs, p = storage.filesystem(path)
    with fs.open_input_file(p) as src:
        src.seek(byte_start)
        data = src.read(byte_end - byte_start)
    try:
        values = pd.read_csv(io.BytesIO(data), header=None, dtype=np.float64).to_numpy()
        return values[:, 1:], values[:, 0], None
    except ValueError:   # some field is not a number: the slow path finds which, record by record
        text = pd.read_csv(io.BytesIO(data), header=None, dtype=str)    # the fast path's NA tokens stay missing
        numbers = text.apply(pd.to_numeric, errors="coerce")
        values = numbers.to_numpy(dtype=np.float64)
        not_number = (numbers.isna() & text.notna()).to_numpy()
        return values[:, 1:], values[:, 0], not_number_problems(text.to_numpy(), not_number)


def not_number_problems(fields: np.ndarray, not_number: np.ndarray) -> list:
    """Per record: "pixel 17 is 'abc', not a number" for its first non-numeric field, or None."""
    first = not_number.argmax(axis=1)
    return [_not_a_number(column, fields[row, column]) if not_number[row, column] else None
            for row, column in enumerate(first)]


def _not_a_number(column: int, value: str) -> str:
    field = "label" if column == 0 else f"pixel {column - 1}"
    return f"{field} is {value[:20]!r}, not a number"
