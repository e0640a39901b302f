"""The store (pipeline.paths, pipeline.storage) and stage outputs (pipeline.outputs): local paths and URIs through one
set of functions; another stage's missing or damaged output is one line naming it and the job to run."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pyarrow import fs as pafs

from pipeline import outputs, paths, storage
from pipeline.errors import PipelineError


def test_a_stage_output_is_read_or_the_job_to_run_first_is_named(tmp_path):
    path = tmp_path / "manifest.json"
    with pytest.raises(PipelineError, match=rf"^{path} not found: run jobs/prepare\.py first$"):
        outputs.read_stage_output(str(path), "prepare")
    with pytest.raises(PipelineError, match=rf"^{path} not found: run jobs/evaluate\.py first, or pass --model M$"):
        outputs.read_stage_output(str(path), "evaluate", otherwise="pass --model M")
    path.write_text(json.dumps({"counts": {"train": 3}}))
    assert outputs.read_stage_output(str(path), "prepare") == {"counts": {"train": 3}}


@pytest.mark.parametrize("content", ['{"counts": {"tra', "[1, 2]", "\xff"])
def test_a_damaged_stage_output_says_to_rerun_the_stage(tmp_path, content):
    path = tmp_path / "history.json"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(PipelineError, match=rf"^{path} is damaged \(not a JSON object\): rerun jobs/train\.py$"):
        outputs.read_stage_output(str(path), "train")


def test_a_missing_folder_names_the_job_to_run_first(tmp_path):
    with pytest.raises(PipelineError, match=rf"^{tmp_path}/test not found: run jobs/prepare\.py first, or pass "
                                            r"--input$"):
        outputs.require_stage_output(str(tmp_path / "test"), "prepare", otherwise="pass --input")
    outputs.require_stage_output(str(tmp_path), "prepare")  # present: nothing to say


def test_remove_files_except_keeps_only_the_listed_files(tmp_path):
    """What prepare's writer does with files of failed task attempts: only the files the driver got back stay."""
    for name in ("part-00000-0.parquet", "part-00000-1.parquet", "part-00001-0.parquet"):
        (tmp_path / name).write_bytes(b"x")
    storage.remove_files_except(str(tmp_path), {f"{tmp_path}/part-00000-1.parquet", f"{tmp_path}/part-00001-0.parquet"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-00000-1.parquet", "part-00001-0.parquet"]


# --- the store: local paths and URIs through one set of functions ----------------------------------------------

def test_a_path_is_told_local_or_remote_in_every_form_it_comes_in():
    assert [paths.local_path(p) for p in ("/data/x", "rel/x", "file:///data/x", "file:/data/x", "hdfs://nn/x",
                                          "s3a://bucket/x")] == ["/data/x", "rel/x", "/data/x", "/data/x", None, None]
    assert paths.absolute("rel/x/") == os.path.join(os.getcwd(), "rel/x")
    assert paths.absolute("s3a://bucket/x/") == "s3a://bucket/x"
    assert paths.as_url("/data/x") == "file:///data/x" and paths.as_url("hdfs://nn/x") == "hdfs://nn/x"
    # Spark names a local file file:/x, whatever form its folder was given in.
    assert paths.within("file:/data/in/a/b.png", "/data/in/") == "a/b.png"
    assert paths.within("/data/in/a/b.png", "file:///data/in") == "a/b.png"
    assert paths.within("hdfs://nn/in/b.png", "hdfs://nn/in") == "b.png"
    assert paths.within("/elsewhere/b.png", "/data/in") == "b.png"


@pytest.fixture
def in_memory_store(monkeypatch):
    """mock:// URIs served by one pyarrow in-memory file system, a remote store the storage functions take as they
    take hdfs:// or s3a:// (pyarrow's own from_uri makes a new, empty one per call)."""
    memory, real = pafs._MockFileSystem(), storage.remote_filesystem
    monkeypatch.setattr(storage, "remote_filesystem", lambda uri: (memory, uri.removeprefix("mock://"))
                        if uri.startswith("mock://") else real(uri))
    return memory


def test_a_remote_file_is_read_through_a_local_copy_removed_afterwards(in_memory_store, tmp_path):
    storage.write_bytes("mock:///models/model_1/model.keras", b"archive")
    with storage.local_file("mock:///models/model_1/model.keras") as local:
        assert os.path.basename(local) == "model.keras" and Path(local).read_bytes() == b"archive"
    assert not os.path.exists(local)
    (tmp_path / "m.keras").write_bytes(b"here")
    with storage.local_file(f"file://{tmp_path}/m.keras") as local:
        assert local == f"{tmp_path}/m.keras"  # a local file is used where it is
    assert (tmp_path / "m.keras").exists()


@pytest.mark.parametrize("where", ["local", "remote"])
def test_a_write_that_fails_midway_leaves_the_file_as_it_was(in_memory_store, tmp_path, where):
    path = f"{tmp_path}/out/list.csv" if where == "local" else "mock:///out/list.csv"
    storage.write_text(path, "old\n")
    with pytest.raises(ValueError, match="killed"):
        with storage.writing(path) as out:
            out.write(b"half of the new")
            raise ValueError("killed")
    assert storage.read_text(path) == "old\n"
    folder = path.rsplit("/", 1)[0]
    fs, p = storage.filesystem(folder)
    assert [info.base_name for info in fs.get_file_info(pafs.FileSelector(p))] == ["list.csv"]


def test_a_remote_folder_is_listed_and_published_like_a_local_one(in_memory_store, tmp_path):
    from pipeline.formats.image_files import list_folder
    for root in (str(tmp_path / "day"), "mock:///landing/day"):
        storage.write_bytes(f"{root}/a/1.png", b"x")
        storage.write_bytes(f"{root}/.hidden.png", b"x")
        listing = list_folder(f"{root}/", (".png",))
        assert [listing.relative(path) for path, _ in listing.files] == ["a/1.png"], root
        with outputs.publishing(f"{root}/out") as tmp:
            storage.write_text(f"{tmp}/part-0", "new")
        assert storage.read_text(f"{root}/out/part-0") == "new"
