"""Failures from below the pipeline told in one line (pipeline/failures.py): a full disk, a store that cannot be
reached, a Spark job failing on its workers. The jobs run as a user runs them, in their own process, so what is
proven is what the terminal shows and the exit code a scheduler sees."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import REPO_ROOT
from pipeline.errors import EXIT_RETRYABLE, RetryableError
from pipeline.failures import environment_failure, horovod_worker_cause, job_failure, last_python_error, working_on

# What a full disk under a Spark write looks like from Python (abridged from a real Py4JJavaError).
SPARK_WRITE_ON_A_FULL_DISK = """An error occurred while calling o123.parquet.
: org.apache.spark.SparkException: Job aborted due to stage failure: Task 0 in stage 4.0 failed 1 times
org.apache.spark.SparkException: [TASK_WRITE_FAILED] Task failed while writing rows to file:/mnt/small/out/predictions.
\tat org.apache.spark.sql.errors.QueryExecutionErrors$.taskFailedWhileWritingRowsError(QueryExecutionErrors.scala:774)
Caused by: java.io.IOException: No space left on device
\tat java.base/java.io.FileOutputStream.writeBytes(Native Method)"""


def job(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """jobs/<script> run as a user runs it, in a process of its own."""
    return subprocess.run([sys.executable, str(REPO_ROOT / "jobs" / script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    """The lines a user reads first: errors and tracebacks (one ERROR line and no traceback is the goal)."""
    return [line for line in proc.stderr.splitlines() if line.startswith(("ERROR", "Traceback"))]


def test_the_cause_is_found_in_spark_horovod_and_python_texts():
    assert str(environment_failure(RuntimeError(SPARK_WRITE_ON_A_FULL_DISK))) == (
        "no space left on device writing file:/mnt/small/out/predictions: free space there (or point the output "
        "elsewhere) and rerun")
    assert str(environment_failure(OSError(28, "No space left on device", "/mnt/small/x.keras"))).startswith(
        "no space left on device writing /mnt/small/x.keras: ")
    horovod_output = ("[1]<stderr>:Traceback (most recent call last):\n[1]<stderr>:  File \"worker.py\", line 3\n"
                      "[1]<stderr>:OSError: [Errno 28] No space left on device: '/mnt/small/ckpt'\n")
    assert last_python_error(horovod_output) == "OSError: [Errno 28] No space left on device: '/mnt/small/ckpt'"
    assert last_python_error(SPARK_WRITE_ON_A_FULL_DISK) is None   # Java class names are not Python errors
    assert environment_failure(ValueError("a bug")) is None        # a bug keeps its traceback


# Two ranks' forwarded output when rank 0 hits a full disk while checkpointing: rank 1 dies first, in the
# allreduce that lost its peer, and either may be printed first (abridged from a real run).
RANK_1_KNOCK_ON = """[1]<stderr>:Traceback (most recent call last):
[1]<stderr>:tensorflow.python.framework.errors_impl.UnknownError: Graph execution error:
[1]<stderr>:Detected at node DistributedAdam_Allreduce/cond/HorovodAllreduce_grads_0 defined at (most recent call last):
"""
RANK_0_CAUSE = ("""[0]<stderr>:  File "/work/pipeline/train/checkpoint.py", line 23, in save\n"""
                "[0]<stderr>:tensorflow.python.framework.errors_impl.ResourceExhaustedError: {{function_node SaveV2}} "
                "/mnt/small/ckpt/part-0.data; No space left on device [Op:SaveV2]\n")


@pytest.mark.parametrize("output", [RANK_1_KNOCK_ON + RANK_0_CAUSE, RANK_0_CAUSE + RANK_1_KNOCK_ON])
def test_the_rank_that_caused_a_horovod_failure_is_named_not_the_one_that_lost_its_peer(output):
    assert horovod_worker_cause(output) == ("no space left on device writing /mnt/small/ckpt/part-0.data: free "
                                            "space there (or point the output elsewhere) and rerun")
    bug = output.replace("; No space left on device [Op:SaveV2]", "").replace("ResourceExhaustedError", "ValueError")
    assert horovod_worker_cause(bug).startswith("tensorflow.python.framework.errors_impl.ValueError: ")


def test_an_object_store_that_cannot_be_reached_is_one_line_and_retryable(tmp_path):
    # No network beyond the package registries here: the bucket's host name does not resolve.
    proc = job("ingest.py", "--profile", "quick", "--set", "paths.input=s3a://mnist-unreachable-bucket/raw",
               "--set", f"paths.data={tmp_path}/data", cwd=tmp_path)
    assert proc.returncode == EXIT_RETRYABLE, proc.stderr[-3000:]
    [line] = error_lines(proc)
    assert line.startswith("ERROR [ingest]: a store could not be reached: ") and "mnist-unreachable-bucket" in line
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.parquet"))


def test_a_full_disk_under_predict_is_one_line_naming_the_output_and_nothing_is_published(
        small_disk, small_mnist_model, small_curated_test_set, tmp_path):
    disk = small_disk(16)   # 1,000 predictions take about 60 KB
    out = disk / "predictions"
    proc = job("predict.py", "--profile", "quick", "--set", f"paths.runs={tmp_path}/runs",
               "--input", small_curated_test_set, "--model", small_mnist_model["trained"], "--output", str(out),
               cwd=tmp_path)
    assert proc.returncode == EXIT_RETRYABLE, proc.stderr[-3000:]
    [line] = error_lines(proc)
    assert line.startswith(f"ERROR [predict]: no space left on device writing file:{disk}/"), line
    assert line.endswith(": free space there (or point the output elsewhere) and rerun")
    assert not out.exists() and list(disk.iterdir()) == []   # nothing half-written left on the disk


def test_a_spark_job_failing_on_its_workers_is_one_retryable_line_naming_what_it_did(spark, tmp_path):
    """What every job prints (pipeline.cli.run_job) for a Python error inside a Spark task: the worker's error
    line, after what the job was doing when it says so; a driver-side error (a bug) keeps its traceback."""
    import pyspark.sql.functions as F
    from pyspark.errors import AnalysisException

    def _fail_on_the_workers(value):  # nested: pickled by value, the workers need not import this module
        raise ValueError(f"record {value} cannot be read")
    failing = spark.range(3).select(F.udf(_fail_on_the_workers, "string")(F.lit(7)).alias("x"))
    with pytest.raises(Exception) as raised:
        failing.collect()
    told = job_failure(raised.value)
    assert isinstance(told, RetryableError)
    assert str(told) == "a Spark job failed: ValueError: record 7 cannot be read"
    with pytest.raises(Exception) as raised, working_on("scoring day 2026-11-20 with model_1 version 3"):
        failing.write.parquet(str(tmp_path / "never"))
    assert str(job_failure(raised.value)) == ("scoring day 2026-11-20 with model_1 version 3 failed: ValueError: "
                                              "record 7 cannot be read")
    # The note stays on the exception working_on saw, though the job re-raises it as another.
    with pytest.raises(RuntimeError) as raised:
        try:
            with working_on("publishing day 2026-11-20"):
                failing.collect()
        except Exception as exc:
            raise RuntimeError("publish aborted") from exc
    assert str(job_failure(raised.value)) == "publishing day 2026-11-20 failed: ValueError: record 7 cannot be read"
    with pytest.raises(AnalysisException) as raised:
        spark.range(3).select("no_such_column").collect()
    assert job_failure(raised.value) is None
