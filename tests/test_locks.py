"""Output locks: one writer per output folder, stale locks taken over, leftovers of killed publishes cleaned.

A second process holds the lock through `held_by_another_process` (spawned, so no fork of this process's JVM);
it signals with events, and the test waits on them with bounded timeouts.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pyarrow import fs as pafs

from pipeline import locks, outputs, storage
from pipeline.errors import PipelineError
from pipeline.locks import lock_path, output_lock

WAIT_SECONDS = 60
SINCE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00"


def hold_lock(path: str, stage: str, held, release) -> None:
    """Body of the other process: take the lock, say so, keep it until told to let go."""
    with output_lock(path, stage):
        held.set()
        release.wait(timeout=WAIT_SECONDS)


@contextmanager
def held_by_another_process(path: str, stage: str) -> Iterator[multiprocessing.Process]:
    ctx = multiprocessing.get_context("spawn")
    held, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=hold_lock, args=(path, stage, held, release))
    holder.start()
    try:
        assert held.wait(timeout=WAIT_SECONDS), "the other process never took the lock"
        yield holder
    finally:
        if holder.is_alive():  # setting an Event a killed process was waiting on would block for ever
            release.set()
        holder.join(timeout=WAIT_SECONDS)
        if holder.is_alive():
            holder.kill()
            holder.join()


def busy_message(output: str, stage: str, pid: int, host: str) -> str:
    return (f"^{re.escape(output)} is locked by stage '{stage}' \\(pid {pid} on {re.escape(host)} since {SINCE}\\): "
            f"wait for it to finish, or if no such process is running, delete {re.escape(lock_path(output))}$")


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait(timeout=WAIT_SECONDS)
    return finished.pid


def write_lock(output: str, **record) -> None:
    Path(lock_path(output)).write_text(json.dumps({"stage": "train", "since": "2024-01-01T00:00:00+00:00",
                                                   "token": "theirs", **record}))


def test_a_lock_is_private_and_holds_no_command_line(tmp_path, monkeypatch):
    """A `--set` value may be a secret, and the lock outlives a crash: it records the job, not its arguments."""
    secret = "spark.settings.spark.hadoop.fs.s3a.secret.key=hunter2"
    monkeypatch.setattr(sys, "argv", ["jobs/train.py", "--set", secret])
    output = str(tmp_path / "train" / "model_1")
    with output_lock(output, "train"):
        text = Path(lock_path(output)).read_text()
        assert "hunter2" not in text and json.loads(text)["job"] == "train.py"
        assert Path(lock_path(output)).stat().st_mode & 0o777 == 0o600


def test_a_second_writer_stops_at_once_naming_the_holder(tmp_path):
    output = str(tmp_path / "train" / "model_1")
    with held_by_another_process(output, "train") as holder:
        record = json.loads(Path(lock_path(output)).read_text())
        assert (record["pid"], record["host"], record["stage"]) == (holder.pid, socket.gethostname(), "train")
        with pytest.raises(PipelineError, match=busy_message(output, "train", holder.pid, socket.gethostname())):
            with output_lock(output, "train"):
                pytest.fail("took a lock another process holds")
        assert json.loads(Path(lock_path(output)).read_text()) == record  # the holder's lock is untouched
    assert holder.exitcode == 0 and not Path(lock_path(output)).exists()
    with output_lock(output, "train"):
        assert json.loads(Path(lock_path(output)).read_text())["pid"] == os.getpid()


def test_the_lock_of_a_killed_process_is_taken_over_with_a_warning(tmp_path, caplog):
    output = str(tmp_path / "evaluate")
    with held_by_another_process(output, "evaluate") as holder:
        holder.kill()
        holder.join(timeout=WAIT_SECONDS)
    assert json.loads(Path(lock_path(output)).read_text())["pid"] == holder.pid  # left behind by the kill
    with caplog.at_level(logging.WARNING, logger="pipeline.locks"):
        with output_lock(output, "evaluate"):
            assert json.loads(Path(lock_path(output)).read_text())["pid"] == os.getpid()
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert re.search(f"taking over the stale lock .*evaluate.lock of stage 'evaluate' \\(pid {holder.pid} on ",
                     caplog.records[0].getMessage())
    assert not Path(lock_path(output)).exists()


def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
    output = str(tmp_path / "eda")
    pid = dead_pid()
    write_lock(output, pid=pid, host="elsewhere.example")
    with pytest.raises(PipelineError, match=busy_message(output, "train", pid, "elsewhere.example")):
        with output_lock(output, "eda"):
            pytest.fail("took over the lock of another host")
    assert json.loads(Path(lock_path(output)).read_text())["host"] == "elsewhere.example"


def test_an_unreadable_lock_is_reported_not_taken_over(tmp_path):
    output = str(tmp_path / "eda")
    Path(lock_path(output)).write_text("")
    message = (f"^{re.escape(output)} is locked by another writer \\({re.escape(lock_path(output))} is empty or "
               f"unreadable\\): if no pipeline job is running on it, delete {re.escape(lock_path(output))}$")
    with pytest.raises(PipelineError, match=message):
        with output_lock(output, "eda"):
            pytest.fail("took an unreadable lock")


def test_the_lock_is_released_after_an_exception(tmp_path):
    output = str(tmp_path / "curated")
    with pytest.raises(ValueError, match="stage failed"):
        with output_lock(output, "prepare"):
            assert locks.holds(f"{output}/train") and not locks.holds(f"{output}-other")
            raise ValueError("stage failed")
    assert not Path(lock_path(output)).exists() and not locks.holds(output)


def test_only_the_owner_releases_the_lock(tmp_path, caplog):
    output = str(tmp_path / "predict")
    with caplog.at_level(logging.WARNING, logger="pipeline.locks"):
        with output_lock(output, "predict"):
            write_lock(output, pid=12345, host="elsewhere.example")  # someone deleted ours and took it
    assert json.loads(Path(lock_path(output)).read_text())["token"] == "theirs"
    assert "is no longer this process's (now pid 12345 on elsewhere.example): left in place" in caplog.text


def test_taking_over_never_removes_a_lock_another_process_just_took(tmp_path):
    """Two processes see the same stale lock; the second must not remove the first one's fresh lock."""
    output = str(tmp_path / "eda")
    write_lock(output, pid=os.getpid(), host=socket.gethostname(), token="fresh")  # the first one's new lock
    locks._take_over(lock_path(output), stale_token="stale")                         # the second, a moment late
    assert json.loads(Path(lock_path(output)).read_text())["token"] == "fresh"
    assert [p.name for p in tmp_path.iterdir()] == ["eda.lock"]


def test_without_exclusive_create_the_record_read_back_decides(tmp_path):
    """The best-effort path used for hdfs:// and s3a://, exercised on the local filesystem."""
    p = str(tmp_path / "out.lock")
    local = pafs.LocalFileSystem()
    assert locks._create_best_effort(local, p, b'{"token": "mine"}', "mine") is True
    assert locks._create_best_effort(local, p, b'{"token": "second"}', "second") is False
    Path(p).unlink()
    assert locks._create_best_effort(local, p, b'{"token": "overwritten by another"}', "mine") is False


def make_folder(path: Path, text: str) -> Path:
    path.mkdir(parents=True)
    (path / "part-0").write_text(text)
    return path


def test_a_publish_under_the_lock_removes_what_killed_publishes_left(tmp_path, caplog):
    final = make_folder(tmp_path / "train", "previous")
    make_folder(tmp_path / "train.tmp-abc", "killed while writing")
    make_folder(tmp_path / "train.old-def", "killed before deleting the old copy")
    make_folder(tmp_path / "train2.tmp-abc", "another output's")
    make_folder(tmp_path / "validation.tmp-abc", "another output's")
    with caplog.at_level(logging.INFO, logger="pipeline.outputs"):
        with output_lock(str(tmp_path), "prepare"), outputs.publishing(str(final)) as tmp:
            assert sorted(p.name for p in tmp_path.iterdir()) == ["train", "train2.tmp-abc", "validation.tmp-abc"]
            make_folder(Path(tmp), "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train", "train2.tmp-abc", "validation.tmp-abc"]
    assert (final / "part-0").read_text() == "new"
    assert "removed train.tmp-abc, left beside" in caplog.text and "removed train.old-def" in caplog.text


def test_a_publish_killed_between_its_moves_gets_the_previous_output_back(tmp_path):
    make_folder(tmp_path / "eda.old-def", "previous")
    make_folder(tmp_path / "eda.tmp-def", "never published")
    with pytest.raises(ValueError, match="this attempt fails too"):
        with output_lock(str(tmp_path / "eda"), "eda"), outputs.publishing(str(tmp_path / "eda")):
            raise ValueError("this attempt fails too")
    assert [p.name for p in tmp_path.iterdir()] == ["eda"]
    assert (tmp_path / "eda" / "part-0").read_text() == "previous"


def test_a_publish_without_the_lock_leaves_siblings_alone(tmp_path):
    """Without the lock a .tmp-* may be a live writer's folder."""
    make_folder(tmp_path / "test.tmp-abc", "maybe someone's live output")
    with outputs.publishing(str(tmp_path / "test")) as tmp:
        make_folder(Path(tmp), "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test", "test.tmp-abc"]


def test_a_stage_refuses_to_run_while_another_process_holds_its_output(spark, make_config, tmp_path):
    from pipeline.eda.stage import run_eda
    from pipeline.layout import Layout
    cfg = make_config()
    layout = Layout.from_config(cfg)
    storage.write_json(layout.curated_manifest, {"fingerprint": "curated-abc", "counts": {"train": 1}})
    storage.write_json(layout.eda_files.manifest, {"fingerprint": "from an earlier run"})
    storage.write_text(layout.eda_files.summary, "{}\n")
    before = {p: p.read_bytes() for p in Path(layout.eda).rglob("*") if p.is_file()}
    with held_by_another_process(layout.eda, "eda") as holder:
        with pytest.raises(PipelineError, match=busy_message(layout.eda, "eda", holder.pid, socket.gethostname())):
            run_eda(spark, cfg, layout, force=True)
    assert {p: p.read_bytes() for p in Path(layout.eda).rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in Path(layout.curated_root).iterdir()) == ["eda", "manifest.json"]
