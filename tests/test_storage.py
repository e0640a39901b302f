"""Reading another stage's output: a missing or damaged file is one line naming it and the job to run."""
from __future__ import annotations

import json

import pytest

from pipeline import storage
from pipeline.errors import PipelineError


def test_a_stage_output_is_read_or_the_job_to_run_first_is_named(tmp_path):
    path = tmp_path / "manifest.json"
    with pytest.raises(PipelineError, match=rf"^{path} not found: run jobs/prepare\.py first$"):
        storage.read_stage_output(str(path), "prepare")
    with pytest.raises(PipelineError, match=rf"^{path} not found: run jobs/evaluate\.py first, or pass --model M$"):
        storage.read_stage_output(str(path), "evaluate", otherwise="pass --model M")
    path.write_text(json.dumps({"counts": {"train": 3}}))
    assert storage.read_stage_output(str(path), "prepare") == {"counts": {"train": 3}}


@pytest.mark.parametrize("content", ['{"counts": {"tra', "[1, 2]", "\xff"])
def test_a_damaged_stage_output_says_to_rerun_the_stage(tmp_path, content):
    path = tmp_path / "history.json"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(PipelineError, match=rf"^{path} is damaged \(not a JSON object\): rerun jobs/train\.py$"):
        storage.read_stage_output(str(path), "train")


def test_a_missing_folder_names_the_job_to_run_first(tmp_path):
    with pytest.raises(PipelineError, match=rf"^{tmp_path}/test not found: run jobs/prepare\.py first, or pass "
                                            r"--input$"):
        storage.require_stage_output(str(tmp_path / "test"), "prepare", otherwise="pass --input")
    storage.require_stage_output(str(tmp_path), "prepare")  # present: nothing to say


def test_remove_files_except_keeps_only_the_listed_files(tmp_path):
    """What prepare's writer does with files of failed task attempts: only the files the driver got back stay."""
    for name in ("part-00000-0.parquet", "part-00000-1.parquet", "part-00001-0.parquet"):
        (tmp_path / name).write_bytes(b"x")
    storage.remove_files_except(str(tmp_path), {f"{tmp_path}/part-00000-1.parquet", f"{tmp_path}/part-00001-0.parquet"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part-00000-1.parquet", "part-00001-0.parquet"]
