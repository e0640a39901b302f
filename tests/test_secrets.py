"""A secret given to a job stays where it must be: in the job's own arguments, in Spark's Hadoop configuration,
redacted everywhere it is written or printed. Never in a child's command line, a file the run wrote (locks, logs,
manifests, reports) or a library's error text."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from test_failures import error_lines, job
from tiny_world import PROFILE, tiny_overrides

from pipeline.config import REPO_ROOT, load_config
from pipeline.errors import EXIT_NOT_RETRYABLE, PipelineError


def command_lines_holding(text: str, but: list[str]) -> list[str]:
    """The command lines of this machine's processes that hold `text`, other than the command line `but`.

    `but` is the job's own: a child the job has forked (subprocess's vfork, before its exec) shows the parent's
    command line for those few microseconds, and that is the job's own argument list, not one handed to a child.
    Any child that was started with the secret in its own command line shows a line of its own."""
    own = "".join(f"{arg} " for arg in but)
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in line and line != own:
            found.append(line)
    return found


def test_a_secret_given_with_set_is_in_no_child_process_and_no_file_the_job_wrote(tiny_world, tmp_path):
    secret = "hunter2-in-a-set-value"
    argv = [sys.executable, str(REPO_ROOT / "jobs" / "ingest.py"), "--profile", PROFILE,
            *[arg for value in tiny_overrides(tmp_path / "out", tiny_world) for arg in ("--set", value)],
            "--set", f"spark.settings.spark.hadoop.fs.s3a.secret.key={secret}"]
    job_process = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen, done = [], threading.Event()

    def watch() -> None:   # the JVM, Spark's Python workers: sampled for the whole run
        while not done.wait(0.2):
            seen.extend(command_lines_holding(secret, but=argv))
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        out, err = job_process.communicate(timeout=600)
    finally:
        done.set()
        watcher.join()
    assert job_process.returncode == 0, err[-3000:]
    assert seen == []
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert any(p.name.endswith(".parquet") for p in written) and any(p.suffix == ".json" for p in written)
    assert [p for p in written if secret.encode() in p.read_bytes()] == []
    assert secret not in out + err


@pytest.mark.parametrize("key", ["paths.input", "tracking.uri", "spark.settings.spark.hadoop.fs.defaultFS"])
def test_a_password_in_a_uri_is_refused_before_any_library_sees_it(key):
    with pytest.raises(PipelineError, match=rf"^{key}: s3a://reader:\*\*\*redacted\*\*\*@store/mnist holds a "
                                            r"password in the URI: pass credentials as settings"):
        load_config(None, "quick", [f"{key}=s3a://reader:Pa55/word@store/mnist"])


def test_a_password_in_a_uri_never_reaches_the_terminal(small_mnist_model, tmp_path):
    secret = "Pa55-word-in-a-uri"
    proc = job("predict.py", "--profile", "quick", "--set", f"paths.runs={tmp_path}/runs",
               "--input", f"s3a://reader:{secret}@store/images", "--model", small_mnist_model["trained"],
               cwd=tmp_path)
    assert proc.returncode == EXIT_NOT_RETRYABLE
    assert error_lines(proc) == ["ERROR [predict]: path s3a://reader:***redacted***@store/images holds a password in "
                                 "the URI: pass credentials as settings (e.g. spark.settings.spark.hadoop.fs.s3a."
                                 "secret.key, redacted everywhere) or the store's environment variables, never in a "
                                 "path"]
    assert secret not in proc.stdout + proc.stderr
    assert not any(secret in p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file())
