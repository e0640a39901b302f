"""Ingest on hand-made tiny inputs: IDX (gzip and plain), npz and CSV readers, structural errors, record checks."""
from __future__ import annotations

import gzip
import hashlib
import logging
import struct

import numpy as np
import pyarrow as pa
import pyspark.sql.functions as F
import pytest
from pyspark.testing import assertDataFrameEqual

from pipeline import storage
from pipeline.data.ingest import run_ingest
from pipeline.errors import PipelineError
from pipeline.formats.idx import read_array
from pipeline.formats.records import PARSED_SCHEMA, record_batch, reject_reasons
from pipeline.layout import Layout
from pipeline.record_checks import image_checks, image_copies, with_policies
from pipeline.report.sections import suspect_images
from pipeline.schema import QUARANTINE_SCHEMA, RAW_SCHEMA
from pipeline.validation_report import KEYS, read_validation_report

N_TRAIN, N_TEST = 40, 20
NAMES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def idx_bytes(array: np.ndarray, element_type: int = 0x08) -> bytes:
    header = bytes([0, 0, element_type, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def sample_arrays(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {split: (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), np.arange(n, dtype=np.uint8) % 10)
            for split, n in (("train", N_TRAIN), ("test", N_TEST))}


def write_idx_set(folder, arrays, gz: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in arrays.items():
        for name, array in zip(NAMES[split], (images, labels), strict=True):
            data = idx_bytes(array)
            (folder / (name if gz else name[:-3])).write_bytes(gzip.compress(data) if gz else data)


def raw_rows(spark, layout) -> list:
    return spark.read.parquet(layout.raw).orderBy("source_split", "source_index").collect()


def test_idx_ingest_keeps_every_record_exactly(spark, make_config, tmp_path):
    arrays = sample_arrays()
    write_idx_set(tmp_path / "in", arrays)
    cfg = make_config("data.records_per_partition=16", input_dir=str(tmp_path / "in"))
    layout = Layout.from_config(cfg)
    summary = run_ingest(spark, cfg, layout)
    assert summary.counts == {"train": N_TRAIN, "test": N_TEST} and summary.details["format"] == "idx"
    assert_raw_matches(spark, layout, arrays, {split: names[0] for split, names in NAMES.items()})
    manifest = storage.read_json(layout.raw_manifest)
    expected_sha = hashlib.sha256((tmp_path / "in" / NAMES["train"][0]).read_bytes()).hexdigest()
    assert manifest["source_checksums"][NAMES["train"][0]] == expected_sha
    assert manifest["checksums_verified"] is False  # no SHA256SUMS in this input
    report = read_validation_report(layout.validation_report)
    assert set(report) == KEYS  # exactly the declared structure, nothing undeclared
    assert report["status"] == "passed" and report["quarantined_fraction"] == 0.0
    assert report["label_counts"]["train"] == {str(k): 4 for k in range(10)}
    assert spark.read.parquet(layout.quarantine).count() == 0


def assert_raw_matches(spark, layout, arrays, id_prefixes: dict[str, str]) -> None:
    """The raw table is every source record exactly: record id "<prefix>:<index>", split, index, bytes, label."""
    expected = [(f"{id_prefixes[split]}:{i}", split, i, image.tobytes(), int(label))
                for split, (images, labels) in arrays.items()
                for i, (image, label) in enumerate(zip(images, labels, strict=True))]
    assertDataFrameEqual(spark.read.parquet(layout.raw), spark.createDataFrame(expected, RAW_SCHEMA))


def test_read_array_reads_a_whole_idx_file_gzip_or_plain_and_checks_it(tmp_path):
    images, labels = sample_arrays()["test"]
    write_idx_set(tmp_path / "gz", sample_arrays())
    write_idx_set(tmp_path / "plain", sample_arrays(), gz=False)
    np.testing.assert_array_equal(read_array(tmp_path / "gz" / NAMES["test"][0]), images)
    np.testing.assert_array_equal(read_array(str(tmp_path / "plain" / NAMES["test"][1][:-3])), labels)
    (tmp_path / "short").write_bytes(idx_bytes(labels)[:-1])
    with pytest.raises(PipelineError, match=r"^short: truncated: header promises 20 records \(28 bytes\) but only "
                                            r"27 bytes are present$"):
        read_array(tmp_path / "short")


def test_plain_idx_rerun_skips_and_force_redoes(spark, make_config, tmp_path):
    arrays = sample_arrays(5)
    write_idx_set(tmp_path / "in", arrays, gz=False)
    cfg = make_config("data.records_per_partition=16", input_dir=str(tmp_path / "in"))
    layout = Layout.from_config(cfg)
    assert run_ingest(spark, cfg, layout).skipped is False
    assert_raw_matches(spark, layout, arrays, {split: names[0][:-3] for split, names in NAMES.items()})
    assert run_ingest(spark, cfg, layout).skipped is True
    assert run_ingest(spark, cfg, layout, force=True).skipped is False
    assert spark.read.parquet(layout.raw).count() == N_TRAIN + N_TEST


def _replace(name: str, data: bytes, gz: bool = True):
    def mutate(folder):
        (folder / name).write_bytes(gzip.compress(data) if gz else data)
    return mutate


def _raw(name: str, data: bytes):
    return _replace(name, data, gz=False)


def _truncate_gz(folder):
    path = folder / NAMES["train"][0]
    path.write_bytes(path.read_bytes()[:5000])


def _bad_checksum(folder):
    (folder / "SHA256SUMS").write_text(f"{'0' * 64}  {NAMES['test'][1]}\n")


def _remove(folder):
    (folder / NAMES["test"][1]).unlink()


_IMAGES = np.zeros((N_TRAIN, 28, 28), np.uint8)
_TRAIN_IMAGES = idx_bytes(_IMAGES)
MALFORMED = {
    "bad magic": (_replace(NAMES["train"][0], b"\x12\x34\x56\x78" + _TRAIN_IMAGES[4:]),
                  r"train-images-idx3-ubyte.gz: not an IDX file \(magic number 0x12345678"),
    "element type": (_replace(NAMES["train"][0], idx_bytes(_IMAGES, element_type=0x0D)),
                     r"train-images-idx3-ubyte.gz: IDX element type 0x0d is not unsigned byte"),
    "dimensions": (_replace(NAMES["train"][0], idx_bytes(np.zeros((N_TRAIN, 27, 28), np.uint8))),
                   r"train-images-idx3-ubyte.gz: images are 27x28, expected 28x28"),
    "truncated": (_replace(NAMES["train"][0], _TRAIN_IMAGES[:-100]),
                  r"train-images-idx3-ubyte.gz: truncated: header promises 40 records \(31376 bytes\) but only "
                  r"31276 bytes"),
    "padded": (_replace(NAMES["train"][0], _TRAIN_IMAGES + b"\0" * 5),
               r"train-images-idx3-ubyte.gz: padded: 5 bytes after the 40 records"),
    "count mismatch": (_replace(NAMES["train"][1], idx_bytes(np.zeros(N_TRAIN - 1, np.uint8))),
                       r"train-images-idx3-ubyte.gz has 40 images but train-labels-idx1-ubyte.gz has 39 labels"),
    "gzip garbage": (_raw(NAMES["test"][0], b"\x1f\x8b" + bytes(range(256)) * 4),
                     r"t10k-images-idx3-ubyte.gz: corrupt gzip data"),
    "truncated gzip": (_truncate_gz, r"train-images-idx3-ubyte.gz: corrupt gzip data \(stream ends"),
    "empty file": (_raw(NAMES["test"][1], b""), r"t10k-labels-idx1-ubyte.gz: file is empty"),
    "not IDX": (_raw(NAMES["test"][1], b"<html>not found</html>"), r"t10k-labels-idx1-ubyte.gz: not an IDX file"),
    "checksum": (_bad_checksum, r"t10k-labels-idx1-ubyte.gz: sha256 [0-9a-f]{64} does not match SHA256SUMS"),
    "missing file": (_remove, r"idx input file t10k-labels-idx1-ubyte.gz not found"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_idx_fails_in_one_line_and_writes_nothing(spark, make_config, tmp_path, case):
    mutate, message = MALFORMED[case]
    write_idx_set(tmp_path / "in", sample_arrays())
    mutate(tmp_path / "in")
    cfg = make_config("data.format=idx", input_dir=str(tmp_path / "in"))
    layout = Layout.from_config(cfg)
    with pytest.raises(PipelineError, match=message) as info:
        run_ingest(spark, cfg, layout)
    assert "\n" not in str(info.value)
    assert not storage.exists(layout.raw_root)


def test_record_checks_quarantine_and_zero_tolerance(spark, make_config, tmp_path):
    arrays = sample_arrays()
    arrays["train"][1][3] = 12                                 # label outside 0-9
    arrays["train"][0][7] = arrays["train"][0][6]             # duplicate within train
    arrays["test"][0][0] = arrays["train"][0][0]              # test image also in train
    write_idx_set(tmp_path / "in", arrays)
    strict = make_config(input_dir=str(tmp_path / "in"))
    layout = Layout.from_config(strict)
    with pytest.raises(PipelineError, match=r"^2 of 60 records failed record checks \(3.3333% > "
                                            r"data.max_quarantine_fraction 0.0\): image also in test: 1, "
                                            r"label outside 0-9: 1; see .*validation_report.json$"):
        run_ingest(spark, strict, layout)
    assert not storage.exists(layout.raw) and not storage.exists(layout.raw_manifest)
    assert storage.read_json(layout.validation_report)["status"] == "failed"

    tolerant = make_config("data.max_quarantine_fraction=0.05", input_dir=str(tmp_path / "in"))
    layout = Layout.from_config(tolerant)
    assert run_ingest(spark, tolerant, layout).counts == {"train": N_TRAIN - 2, "test": N_TEST}
    assertDataFrameEqual(spark.read.parquet(layout.quarantine), spark.createDataFrame(
        [("train-images-idx3-ubyte.gz:0", "train", 0, 0, "image also in test"),
         ("train-images-idx3-ubyte.gz:3", "train", 3, 12, "label outside 0-9")], QUARANTINE_SCHEMA))
    report = storage.read_json(layout.validation_report)
    assert report["duplicate_images"] == {"within_train": 1, "within_test": 0, "test_in_train": 1}
    assert report["quarantine_reasons"] == {"image also in test": 1, "label outside 0-9": 1}
    assert report["class_balance"]["train"]["smallest"] == {"label": 0, "count": 3}


TRAIN_FILE, TEST_FILE = NAMES["train"][0], NAMES["test"][0]
BLANK_IDS = [f"{TRAIN_FILE}:2", f"{TRAIN_FILE}:5", f"{TEST_FILE}:3"]
IN_TEST_IDS = [f"{TRAIN_FILE}:4", f"{TRAIN_FILE}:9"]
POLICY_WORDS = {"warn": "kept, logged as a warning", "quarantine": "moved to the quarantine table",
                "drop": "removed (counted, kept nowhere)"}


def blank_arrays() -> dict:
    """Training images 2 and 5 and test image 3 are blank (every pixel 0)."""
    arrays = sample_arrays(7)
    for split, i in (("train", 2), ("train", 5), ("test", 3)):
        arrays[split][0][i] = 0
    return arrays


def in_test_arrays() -> dict:
    """Training images 4 and 9 are exact copies of test images 1 and 7."""
    arrays = sample_arrays(8)
    arrays["train"][0][4], arrays["train"][0][9] = arrays["test"][0][1], arrays["test"][0][7]
    return arrays


def ingest_logged(spark, make_config, tmp_path, caplog, arrays, *overrides):
    """Ingest `arrays` as IDX; returns (summary, layout, [(level, message)] logged by the data stage)."""
    write_idx_set(tmp_path / "in", arrays)
    cfg = make_config(*overrides, input_dir=str(tmp_path / "in"))
    layout = Layout.from_config(cfg)
    with caplog.at_level(logging.INFO, logger="pipeline.data"):
        summary = run_ingest(spark, cfg, layout)
    return summary, layout, [(r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith("pipeline.data")]


def quarantine_reasons(spark, layout) -> dict:
    return dict(spark.read.parquet(layout.quarantine).select("record_id", "reason").collect())


@pytest.mark.parametrize("policy, kept, quarantined, dropped", [
    ("warn", {"train": 40, "test": 20}, {}, {"test": 0, "train": 0}),
    ("quarantine", {"train": 38, "test": 19}, dict.fromkeys(BLANK_IDS, "blank image"), {"test": 0, "train": 0}),
    ("drop", {"train": 38, "test": 19}, {}, {"test": 1, "train": 2}),
])
def test_blank_image_policies(spark, make_config, tmp_path, caplog, policy, kept, quarantined, dropped):
    summary, layout, logged = ingest_logged(spark, make_config, tmp_path, caplog, blank_arrays(),
                                            f"data.blank_images={policy}", "data.test_images_in_train=warn",
                                            "data.max_quarantine_fraction=0.05")
    assert summary.counts == kept
    assert quarantine_reasons(spark, layout) == quarantined
    report = storage.read_json(layout.validation_report)
    assert report["dropped"] == dropped and report["records"] == {"test": 20, "train": 40}
    assert report["findings"]["blank_images"] == {"policy": policy, "count": 3, "by_split": {"test": 1, "train": 2},
                                                  "examples": BLANK_IDS}
    blank_in_raw = spark.read.parquet(layout.raw).filter(F.col("image") == bytes(784)).count()
    assert blank_in_raw == (3 if policy == "warn" else 0)
    examples = ", ".join(BLANK_IDS)
    assert (logging.INFO, f"  blank images (every pixel 0): 3 (test 1, train 2), e.g. {examples}, "
                          f"data.blank_images {policy}") in logged
    warnings = [message for level, message in logged if level == logging.WARNING]
    if policy == "warn":    # kept, both blank training copies are then also copies of the blank test image
        assert warnings == [f"blank images (every pixel 0) kept because data.blank_images is warn: 3 (test 1, "
                            f"train 2), e.g. {examples}",
                            f"training images that are also test images kept because data.test_images_in_train is "
                            f"warn: 2 (train 2), e.g. {TRAIN_FILE}:2, {TRAIN_FILE}:5"]
    else:                   # removed, so not also counted as test images in train
        assert warnings == [] and report["findings"]["test_images_in_train"]["count"] == 0


def test_blank_images_count_against_quarantine_tolerance(spark, make_config, tmp_path):
    write_idx_set(tmp_path / "in", blank_arrays())
    cfg = make_config(input_dir=str(tmp_path / "in"))
    layout = Layout.from_config(cfg)
    with pytest.raises(PipelineError, match=r"^3 of 60 records failed record checks \(5.0000% > "
                                            r"data.max_quarantine_fraction 0.0\): blank image: 3; see "):
        run_ingest(spark, cfg, layout)
    assert not storage.exists(layout.raw) and not storage.exists(layout.raw_manifest)


@pytest.mark.parametrize("finding, arrays, first", [
    ("blank_images", blank_arrays, "3 blank images \\(every pixel 0\\) were found, the first "
                                   "train-images-idx3-ubyte.gz:2"),
    ("test_images_in_train", in_test_arrays, "2 training images that are also test images were found, the first "
                                             "train-images-idx3-ubyte.gz:4"),
])
def test_fail_policy_stops_ingest_naming_count_and_first_record(spark, make_config, tmp_path, finding, arrays, first):
    write_idx_set(tmp_path / "in", arrays())
    cfg = make_config(f"data.{finding}=fail", input_dir=str(tmp_path / "in"))
    layout = Layout.from_config(cfg)
    with pytest.raises(PipelineError, match=rf"^data.{finding} is fail and {first}; see .*validation_report.json$"):
        run_ingest(spark, cfg, layout)
    assert not storage.exists(layout.raw) and not storage.exists(layout.raw_manifest)
    report = storage.read_json(layout.validation_report)
    assert report["status"] == "failed" and report["error"].startswith(f"data.{finding} is fail")


@pytest.mark.parametrize("policy, kept_train, quarantined, dropped", [
    ("warn", 40, {}, 0),
    ("quarantine", 38, dict.fromkeys(IN_TEST_IDS, "image also in test"), 0),
    ("drop", 38, {}, 2),
])
def test_test_images_in_train_policies_change_only_train(spark, make_config, tmp_path, caplog, policy, kept_train,
                                                         quarantined, dropped):
    arrays = in_test_arrays()
    summary, layout, logged = ingest_logged(spark, make_config, tmp_path, caplog, arrays,
                                            f"data.test_images_in_train={policy}", "data.max_quarantine_fraction=0.05")
    assert summary.counts == {"train": kept_train, "test": N_TEST}
    assert quarantine_reasons(spark, layout) == quarantined
    test_rows = [r for r in raw_rows(spark, layout) if r.source_split == "test"]
    assert [r.image for r in test_rows] == [image.tobytes() for image in arrays["test"][0]]    # the benchmark as is
    report = storage.read_json(layout.validation_report)
    assert report["dropped"] == {"test": 0, "train": dropped}
    assert report["duplicate_images"] == {"within_train": 0, "within_test": 0, "test_in_train": 2}
    found = report["findings"]["test_images_in_train"]
    assert found == {"policy": policy, "count": 2, "by_split": {"train": 2}, "examples": IN_TEST_IDS}
    assert (logging.INFO, f"  training images that are also test images: 2 (train 2), e.g. {', '.join(IN_TEST_IDS)}, "
                          f"data.test_images_in_train {policy}") in logged
    section = suspect_images(report)
    assert section[1].splitlines()[3] == (f"| training images that are also test images | `data.test_images_in_train: "
                                          f"{policy}` | 2 | {POLICY_WORDS[policy]} | `{IN_TEST_IDS[0]}`, "
                                          f"`{IN_TEST_IDS[1]}` |")
    assert section[1].splitlines()[2] == ("| blank images (every pixel 0) | `data.blank_images: quarantine` | 0 | - "
                                          "| - |")


@pytest.mark.parametrize("policy, message", [
    ("quarantine", r"all 20 were quarantined \(20\) or dropped \(0\)"),
    ("drop", r"all 20 were quarantined \(0\) or dropped \(20\)"),
])
def test_split_left_without_usable_records_fails(spark, make_config, tmp_path, policy, message):
    arrays = sample_arrays(9)
    arrays["test"][0][:] = 0
    write_idx_set(tmp_path / "in", arrays)
    cfg = make_config(f"data.blank_images={policy}", "data.max_quarantine_fraction=1", input_dir=str(tmp_path / "in"))
    layout = Layout.from_config(cfg)
    with pytest.raises(PipelineError, match=rf"^t10k-images-idx3-ubyte.gz: no usable test records: {message}; see "):
        run_ingest(spark, cfg, layout)
    assert not storage.exists(layout.raw) and not storage.exists(layout.raw_manifest)
    assert storage.read_json(layout.validation_report)["status"] == "failed"


SUSPECTS = [("tr-copy", "train", 0, b"\x07" * 4, 1, None), ("tr-blank", "train", 1, b"\x00" * 4, 2, None),
            ("tr-own", "train", 2, b"\x09" * 4, 3, None), ("tr-bad", "train", 3, b"\x00" * 4, 4, "missing value"),
            ("te-copy", "test", 0, b"\x07" * 4, 1, None), ("te-blank", "test", 1, b"\x00" * 4, 2, None)]


def checked_records(spark, rows):
    """Parsed records as ingest's workers leave them in Spark: no pixels, the image checks beside them."""
    parsed = pa.RecordBatch.from_pylist([dict(zip(PARSED_SCHEMA.fieldNames(), row, strict=True)) for row in rows])
    image_hash, blank = image_checks(parsed)
    columns = {**{c: parsed.column(c).to_pylist() for c in PARSED_SCHEMA.fieldNames() if c != "image"},
               "image_hash": image_hash.to_pylist(), "blank": blank.to_pylist()}
    return spark.createDataFrame(list(zip(*columns.values(), strict=True)),
                                 "record_id string, source_split string, source_index long, label int, reason string, "
                                 "image_hash binary, blank boolean")


@pytest.mark.parametrize("blank_policy, in_test_policy, expected", [
    ("warn", "quarantine", [("tr-copy", "image also in test", False, True, False),
                            ("tr-blank", "image also in test", True, True, False),
                            ("te-blank", None, True, False, False)]),
    ("drop", "drop", [("tr-copy", None, False, True, True), ("tr-blank", None, True, False, True),
                      ("te-blank", None, True, False, True)]),
    ("quarantine", "warn", [("tr-copy", None, False, True, False), ("tr-blank", "blank image", True, False, False),
                            ("te-blank", "blank image", True, False, False)]),
])
def test_with_policies_flags_by_image_hash(spark, blank_policy, in_test_policy, expected):
    checked = checked_records(spark, SUSPECTS)
    flagged = checked.transform(with_policies, image_copies(checked), blank_policy, in_test_policy)
    # A record the reader rejected is neither blank nor a copy, whatever its pixels.
    plain = [("tr-own", None, False, False, False), ("tr-bad", "missing value", False, False, False),
             ("te-copy", None, False, False, False)]
    assertDataFrameEqual(flagged.select("record_id", "reason", "blank", "in_test", "dropped"),
                         spark.createDataFrame(expected + plain, "record_id string, reason string, blank boolean, "
                                                                 "in_test boolean, dropped boolean"))
    plan = flagged._jdf.queryExecution().executedPlan().toString()
    assert "BroadcastHashJoin" in plan and "SortMergeJoin" not in plan     # the records never shuffle


def test_image_checks_hash_every_image_and_find_blanks_in_a_slice():
    images = np.random.default_rng(0).integers(1, 256, (6, 784), dtype=np.uint8)
    images[[1, 4]] = 0
    batch = record_batch("f", "train", 0, images, np.array([0, 1, 2, 3, 11, 5])).slice(1, 4)  # offsets not at 0
    image_hash, blank = image_checks(batch)
    assert image_hash.to_pylist() == [hashlib.sha256(images[i].tobytes()).digest() for i in range(1, 5)]
    assert blank.to_pylist() == [True, False, False, False]     # record 4 is blank but its label is rejected


def test_reject_reasons_name_the_reader_problem_then_the_label_then_the_image_size():
    labels = np.array([3, 0, 10, -1, 12, 1])
    label_null = np.array([False, True, False, False, False, False])
    problems = [None, None, None, None, "missing value", None]
    assert reject_reasons(labels, label_null, problems, 784) == [
        None, "missing label", "label outside 0-9", "label outside 0-9", "missing value", None]
    assert reject_reasons(labels, label_null, problems, 4) == [
        "image is not 784 bytes", "missing label", "label outside 0-9", "label outside 0-9", "missing value",
        "image is not 784 bytes"]
    batch = record_batch("f", "test", 7, np.zeros((2, 784), np.uint8), np.array([9, 10]))
    assert batch.column("reason").to_pylist() == [None, "label outside 0-9"]


def test_npz_reader(spark, make_config, tmp_path):
    arrays = sample_arrays(1)
    (tmp_path / "in").mkdir()
    np.savez(tmp_path / "in" / "mnist.npz", x_train=arrays["train"][0], y_train=arrays["train"][1],
             x_test=arrays["test"][0], y_test=arrays["test"][1])
    cfg = make_config("data.records_per_partition=16", input_dir=str(tmp_path / "in"))
    layout = Layout.from_config(cfg)
    assert run_ingest(spark, cfg, layout).details["format"] == "npz"
    assert_raw_matches(spark, layout, arrays, {split: f"mnist.npz:{split}" for split in arrays})


def test_npz_with_float_pixels_checks_range(spark, make_config, tmp_path):
    arrays = sample_arrays(2)
    x_train = arrays["train"][0].astype(np.float64)
    x_train[0, 0, 0], x_train[1, 5, 5], x_train[2, 1, 1] = 300.0, np.nan, 0.5
    (tmp_path / "in").mkdir()
    np.savez_compressed(tmp_path / "in" / "mnist.npz", x_train=x_train, y_train=arrays["train"][1].astype(np.int64),
                        x_test=arrays["test"][0], y_test=arrays["test"][1])
    cfg = make_config("data.max_quarantine_fraction=1", input_dir=str(tmp_path / "in"))
    layout = Layout.from_config(cfg)
    run_ingest(spark, cfg, layout)
    reasons = dict(spark.read.parquet(layout.quarantine).select("source_index", "reason").collect())
    assert reasons == {0: "pixel value out of range (not an integer 0-255)", 1: "missing value",
                       2: "pixel value out of range (not an integer 0-255)"}
    kept = spark.read.parquet(layout.raw).filter(F.col("source_index") == 3).first()
    assert kept.image == arrays["train"][0][3].tobytes()


def write_csv(path, images: np.ndarray, labels: list, edits: dict | None = None) -> None:
    lines = ["label," + ",".join(f"pixel{i}" for i in range(784))]
    for i, (image, label) in enumerate(zip(images.reshape(len(images), 784), labels, strict=True)):
        fields = [str(label), *map(str, image.tolist())]
        for column, value in (edits or {}).get(i, {}).items():
            fields[column] = value
        lines.append(",".join(fields))
    path.write_text("\n".join(lines) + "\n")


def test_csv_reader_and_record_checks(spark, make_config, tmp_path):
    arrays = sample_arrays(3)
    (tmp_path / "in").mkdir()
    edits = {2: {0: "11"}, 4: {10: ""}, 5: {100: "256"}, 6: {0: "x"}, 8: {18: "abc", 30: "z"}, 9: {5: "NA"}}
    write_csv(tmp_path / "in" / "mnist_train.csv", arrays["train"][0], arrays["train"][1].tolist(), edits)
    write_csv(tmp_path / "in" / "mnist_test.csv", arrays["test"][0], arrays["test"][1].tolist())
    cfg = make_config("data.records_per_partition=7", "data.max_quarantine_fraction=0.1",
                      input_dir=str(tmp_path / "in"))
    layout = Layout.from_config(cfg)
    assert run_ingest(spark, cfg, layout).counts == {"train": N_TRAIN - len(edits), "test": N_TEST}
    expected = [("mnist_train.csv:2", "label outside 0-9"), ("mnist_train.csv:4", "missing value"),
                ("mnist_train.csv:5", "pixel value out of range (not an integer 0-255)"),
                ("mnist_train.csv:6", "label is 'x', not a number"),
                ("mnist_train.csv:8", "pixel 17 is 'abc', not a number"), ("mnist_train.csv:9", "missing value")]
    assertDataFrameEqual(spark.read.parquet(layout.quarantine).select("record_id", "reason"),
                         spark.createDataFrame(expected, "record_id string, reason string"))
    rows = raw_rows(spark, layout)
    assert [r.image for r in rows[:N_TEST]] == [a.tobytes() for a in arrays["test"][0]]
    assert [r.source_index for r in rows[N_TEST:]] == [i for i in range(N_TRAIN) if i not in edits]


@pytest.mark.parametrize("content, message", [
    ("label,pixel0\n1,2\n", r"mnist_test.csv: header is not label,pixel0,...,pixel783"),
    (None, r"mnist_test.csv: line 3 has 3 fields, expected 785"),
    ("", r"mnist_test.csv: file is empty"),
])
def test_malformed_csv(spark, make_config, tmp_path, content, message):
    arrays = sample_arrays(4)
    (tmp_path / "in").mkdir()
    write_csv(tmp_path / "in" / "mnist_train.csv", arrays["train"][0], arrays["train"][1].tolist())
    test_csv = tmp_path / "in" / "mnist_test.csv"
    write_csv(test_csv, arrays["test"][0], arrays["test"][1].tolist())
    if content is None:
        lines = test_csv.read_text().splitlines()
        test_csv.write_text("\n".join([*lines[:2], "1,2,3", *lines[3:]]) + "\n")
    else:
        test_csv.write_text(content)
    cfg = make_config(input_dir=str(tmp_path / "in"))
    layout = Layout.from_config(cfg)
    with pytest.raises(PipelineError, match=message):
        run_ingest(spark, cfg, layout)
    assert not storage.exists(layout.raw_root)


def _header_only_train_csv(folder):
    arrays = sample_arrays(6)
    write_csv(folder / "mnist_train.csv", arrays["train"][0][:0], [])
    write_csv(folder / "mnist_test.csv", arrays["test"][0], arrays["test"][1].tolist())


def _idx_without_test_records(folder):
    arrays = sample_arrays(6)
    write_idx_set(folder, {**arrays, "test": (arrays["test"][0][:0], arrays["test"][1][:0])})


def _npz_without_test_records(folder):
    arrays = sample_arrays(6)
    np.savez(folder / "mnist.npz", x_train=arrays["train"][0], y_train=arrays["train"][1],
             x_test=arrays["test"][0][:0], y_test=arrays["test"][1][:0])


@pytest.mark.parametrize("write_input, message", [
    (_header_only_train_csv, r"^mnist_train.csv: no records, so the train split would be empty$"),
    (_idx_without_test_records, r"^t10k-images-idx3-ubyte.gz: no records, so the test split would be empty$"),
    (_npz_without_test_records, r"^mnist.npz \(x_test\): no records, so the test split would be empty$"),
])
def test_source_split_without_records_fails_and_writes_nothing(spark, make_config, tmp_path, write_input, message):
    (tmp_path / "in").mkdir()
    write_input(tmp_path / "in")
    cfg = make_config(input_dir=str(tmp_path / "in"))
    layout = Layout.from_config(cfg)
    with pytest.raises(PipelineError, match=message):
        run_ingest(spark, cfg, layout)
    assert not storage.exists(layout.raw_root)


def test_no_input_found(spark, make_config, tmp_path):
    (tmp_path / "in").mkdir()
    cfg = make_config(input_dir=str(tmp_path / "in"))
    with pytest.raises(PipelineError, match=r"no MNIST input found \(looked for idx: train-images-idx3-ubyte.gz"):
        run_ingest(spark, cfg, Layout.from_config(cfg))
    missing = make_config(input_dir=str(tmp_path / "nowhere"))
    with pytest.raises(PipelineError, match=r"input directory .*nowhere does not exist"):
        run_ingest(spark, missing, Layout.from_config(missing))
