"""Source files (IDX, npz or CSV) to a DataFrame of parsed records, without the pixels ever visiting the driver.

Three steps: find the files (driver: a directory listing); scan them (one Spark task per file: sha256 and
headers, no pixel kept); check their structure and plan record ranges (driver: metadata only); then parse the
ranges on executors with `mapInArrow`, one range per partition, straight into Arrow buffers.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from pyarrow import fs as pafs
from pyspark.sql import DataFrame, SparkSession

from pipeline import storage
from pipeline.config import DataConfig
from pipeline.errors import PipelineError
from pipeline.formats import csvtext, idx, npz
from pipeline.formats.records import PARSED_SCHEMA, checked_numbers, record_batch
from pipeline.schema import IMAGE_HEIGHT, IMAGE_PIXELS, IMAGE_WIDTH

FORMATS = ("idx", "npz", "csv")


@dataclass(frozen=True)
class Source:
    split: str        # "train", "test", or "both" (npz holds both splits)
    role: str         # "images", "labels", "npz" or "csv"
    name: str         # file name as found (record ids and SHA256SUMS use it)
    path: str


def list_input(input_dir: str) -> set[str]:
    """Names of the files in `input_dir` (local path or URI)."""
    fs, p = storage.filesystem(input_dir)
    if fs.get_file_info(p).type != pafs.FileType.Directory:
        raise PipelineError(f"input directory {input_dir} does not exist")
    return {info.base_name for info in fs.get_file_info(pafs.FileSelector(p)) if info.type == pafs.FileType.File}


def discover_sources(input_dir: str, data: DataConfig) -> tuple[str, list[Source]]:
    """The input format (configured, or the first whose files are all present) and its source files."""
    names = list_input(input_dir)
    wanted = {fmt: _wanted(fmt, data) for fmt in FORMATS}
    found = {fmt: [_present(name, names, fmt == "idx") for *_, name in wanted[fmt]] for fmt in FORMATS}
    fmt = data.format if data.format != "auto" else next((f for f in FORMATS if all(found[f])), None)
    if fmt is None:
        looked = "; ".join(f"{f}: {', '.join(n for *_, n in wanted[f])}" for f in FORMATS)
        raise PipelineError(f"{input_dir}: no MNIST input found (looked for {looked})")
    missing = [name for (*_, name), actual in zip(wanted[fmt], found[fmt], strict=True) if actual is None]
    if missing:
        raise PipelineError(f"{input_dir}: {fmt} input file {missing[0]} not found")
    return fmt, [Source(split, role, actual, f"{input_dir.rstrip('/')}/{actual}")
                 for (split, role, _), actual in zip(wanted[fmt], found[fmt], strict=True)]


def sources_at(path: str, data: DataConfig) -> tuple[str, list[Source]]:
    """A folder laid out like the ingest input (every configured file), or one file: an IDX images file with its
    labels file beside it, a Keras mnist.npz, or an MNIST CSV (label first)."""
    if storage.is_dir(path):
        return discover_sources(path, data)
    folder, name = path.rsplit("/", 1)
    if name.endswith(".npz"):
        return "npz", [Source("both", "npz", name, path)]
    if name.endswith(".csv"):
        return "csv", [Source("test", "csv", name, path)]
    labels = name.replace("images", "labels").replace("idx3", "idx1")
    if labels == name or not storage.exists(f"{folder}/{labels}"):
        raise PipelineError(f"{path}: not a Parquet, image, .npz or .csv file, and no IDX labels file "
                            f"{labels} beside it (IDX images are read with their labels)")
    return "idx", [Source("test", "images", name, path), Source("test", "labels", labels, f"{folder}/{labels}")]


def _wanted(fmt: str, data: DataConfig) -> list[tuple[str, str, str]]:
    if fmt == "idx":
        return [("train", "images", data.train_images), ("train", "labels", data.train_labels),
                ("test", "images", data.test_images), ("test", "labels", data.test_labels)]
    if fmt == "npz":
        return [("both", "npz", data.npz_file)]
    return [("train", "csv", data.train_csv), ("test", "csv", data.test_csv)]


def _present(name: str, names: set[str], either_compression: bool) -> str | None:
    """`name` as found; IDX files may also be present in the other form (plain for .gz, .gz for plain)."""
    if name in names:
        return name
    other = name[:-3] if name.endswith(".gz") else f"{name}.gz"
    return other if either_compression and other in names else None


def scan_sources(spark: SparkSession, fmt: str, sources: list[Source], data: DataConfig) -> list[dict]:
    """One Spark task per file: checksum and headers. Only these small dicts come back to the driver."""
    fields = IMAGE_PIXELS + 1  # the label, then the pixels
    per_task = data.records_per_partition
    jobs = [(fmt, s.path) for s in sources]
    return (spark.sparkContext.parallelize(jobs, len(jobs))
            .map(lambda job: _scan(job[0], job[1], fields, per_task)).collect())


def _scan(fmt: str, path: str, fields: int, per_task: int) -> dict:
    if fmt == "idx":
        return idx.scan(path)
    if fmt == "npz":
        return npz.scan(path)
    return csvtext.scan(path, fields, per_task)


def plan_tasks(fmt: str, sources: list[Source], scans: list[dict], data: DataConfig) -> tuple[dict, list[dict]]:
    """Structural checks (PipelineError naming the file) and the record ranges to parse: ({split: n}, tasks)."""
    for source, scanned in zip(sources, scans, strict=True):
        if scanned.get("error"):
            raise PipelineError(f"{source.name}: {scanned['error']}")
    planners = {"idx": _plan_idx, "npz": _plan_npz, "csv": _plan_csv}
    return planners[fmt](sources, scans, data)


def _ranges(count: int, per_task: int) -> list[tuple[int, int]]:
    return [(start, min(per_task, count - start)) for start in range(0, count, per_task)]


def _plan_idx(sources: list[Source], scans: list[dict], data: DataConfig) -> tuple[dict, list[dict]]:
    counts, tasks = {}, []
    for i in range(0, len(sources), 2):
        images, labels = sources[i], sources[i + 1]
        image_header = idx.parse_header(images.name, bytes.fromhex(scans[i]["head"]))
        label_header = idx.parse_header(labels.name, bytes.fromhex(scans[i + 1]["head"]))
        idx.check_images(images.name, image_header, scans[i]["length"], IMAGE_HEIGHT, IMAGE_WIDTH)
        idx.check_labels(labels.name, label_header, scans[i + 1]["length"])
        idx.check_pair(images.name, image_header, labels.name, label_header)
        counts[images.split] = image_header.count
        tasks += [{"format": "idx", "split": images.split, "name": images.name, "start": start, "count": n,
                   "images": images.path, "images_gz": scans[i]["compressed"], "images_offset": image_header.size,
                   "record_size": image_header.record_size, "labels": labels.path,
                   "labels_gz": scans[i + 1]["compressed"], "labels_offset": label_header.size}
                  for start, n in _ranges(image_header.count, data.records_per_partition)]
    return counts, tasks


def _plan_npz(sources: list[Source], scans: list[dict], data: DataConfig) -> tuple[dict, list[dict]]:
    source, members = sources[0], scans[0]["members"]
    counts = npz.check(source.name, members, IMAGE_HEIGHT, IMAGE_WIDTH)
    tasks = [{"format": "npz", "split": split, "name": f"{source.name}:{split}", "start": start, "count": n,
              "path": source.path, "x": x, "x_info": members[x], "y": y, "y_info": members[y]}
             for split, (x, y) in npz.MEMBERS.items()
             for start, n in _ranges(counts[split], data.records_per_partition)]
    return counts, tasks


def _plan_csv(sources: list[Source], scans: list[dict], data: DataConfig) -> tuple[dict, list[dict]]:
    fields = IMAGE_PIXELS + 1  # the label, then the pixels
    counts, tasks = {}, []
    for source, scanned in zip(sources, scans, strict=True):
        csvtext.check(source.name, scanned, fields)
        counts[source.split] = scanned["records"]
        bounds = [*scanned["offsets"], scanned["end"]]
        tasks += [{"format": "csv", "split": source.split, "name": source.name, "start": start, "count": n,
                   "path": source.path, "byte_start": bounds[k], "byte_end": bounds[k + 1]}
                  for k, (start, n) in enumerate(_ranges(scanned["records"], data.records_per_partition))]
    return counts, tasks


def read_records(spark: SparkSession, tasks: list[dict]) -> DataFrame:
    """Parsed records (PARSED_SCHEMA): one partition per task, parsed on executors into Arrow batches."""
    return task_frame(spark, tasks).mapInArrow(parse_batches, PARSED_SCHEMA)


def task_frame(spark: SparkSession, tasks: list[dict]) -> DataFrame:
    """The planned tasks as one row (`task`: JSON) per partition, for `parse_batches` on the executors."""
    rows = spark.sparkContext.parallelize([(json.dumps(t),) for t in tasks], max(len(tasks), 1))
    return spark.createDataFrame(rows, "task string")


def parse_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Executor side: the parsed records (PARSED_SCHEMA) of every task in a partition of `task_frame`."""
    for batch in batches:
        for task in batch.column("task").to_pylist():
            yield parse_task(json.loads(task))


def parse_task(task: dict) -> pa.RecordBatch:
    """Executor side: one range of records of any format as an Arrow batch."""
    if task["format"] == "idx":
        images, labels = _idx_arrays(task)
        return record_batch(task["name"], task["split"], task["start"], images, labels.astype(np.int64))
    if task["format"] == "npz":
        x = npz.read_range(task["path"], task["x"], task["x_info"], task["start"], task["count"])
        y = npz.read_range(task["path"], task["y"], task["y_info"], task["start"], task["count"])
        if x.dtype == np.uint8 and y.dtype.kind in "ui":
            return record_batch(task["name"], task["split"], task["start"], x, y.astype(np.int64))
        pixels, labels, not_numbers = x.reshape(len(x), -1), y, None
    else:
        pixels, labels, not_numbers = csvtext.read_range(task["path"], task["byte_start"], task["byte_end"])
    if len(labels) != task["count"]:
        raise ValueError(f"{task['name']}: expected {task['count']} records from {task['start']}, got {len(labels)}")
    images, labels, label_null, problems = checked_numbers(pixels, labels)
    if not_numbers is not None:     # "pixel 17 is 'abc', not a number" says more than "missing value"
        problems = [text or problem for text, problem in zip(not_numbers, problems, strict=True)]
    return record_batch(task["name"], task["split"], task["start"], images, labels, label_null, problems)


def _idx_arrays(task: dict) -> tuple[np.ndarray, np.ndarray]:
    start, count, size = task["start"], task["count"], task["record_size"]
    images = idx.read_range(task["images"], task["images_gz"], task["images_offset"] + start * size, count * size)
    labels = idx.read_range(task["labels"], task["labels_gz"], task["labels_offset"] + start, count)
    if len(images) != count * size or len(labels) != count:
        raise ValueError(f"{task['name']}: file changed while being read (short read at record {start})")
    return np.frombuffer(images, np.uint8).reshape(count, size), np.frombuffer(labels, np.uint8)
