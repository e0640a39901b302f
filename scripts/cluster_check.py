"""Prove a cluster is usable before the pipeline runs on it: tasks on every executor, a Horovod allreduce across them.

    spark-submit --master spark://127.0.0.1:7077 --py-files dist/pipeline.zip scripts/cluster_check.py [--ranks 2]

Prints one JSON line: the executors that ran tasks, where `pipeline` was imported from on them (the shipped zip)
and the environment their Python runs in (a shipped --archives environment, or the venv),
and for every Horovod rank its allreduce result, host, pid and executor (read from its working directory, which
a standalone worker names <work-dir>/<app-id>/<executor-id>). Exit code 1 when the ranks did not land on
distinct executors or the allreduce is wrong.
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def where_am_i() -> dict:
    """Host, pid and executor of the calling process, from its working directory (see the module docstring)."""
    import socket
    cwd = os.getcwd()
    return {"host": socket.gethostname(), "pid": os.getpid(), "executor": os.path.basename(cwd),
            "worker_dir": os.path.dirname(os.path.dirname(cwd))}


def _task_facts(_rows) -> list[dict]:
    import pipeline
    return [{**where_am_i(), "pipeline_from": os.path.dirname(os.path.dirname(pipeline.__file__)),
             "python": sys.prefix}]


def _allreduce_rank() -> dict:
    import horovod.tensorflow as hvd
    import tensorflow as tf
    hvd.init()
    total = hvd.allreduce(tf.constant(float(hvd.rank() + 1)), op=hvd.Sum)
    return {"rank": hvd.rank(), "size": hvd.size(), "sum": float(total.numpy()), **where_am_i()}


def run_checks(spark, ranks: int) -> dict:
    from pipeline.services import run_horovod
    count = spark.range(0, 100_000, numPartitions=4 * ranks).count()
    tasks = spark.sparkContext.parallelize(range(4 * ranks), 4 * ranks).mapPartitions(_task_facts).collect()
    results = run_horovod(spark, _allreduce_rank, num_proc=ranks, start_timeout=120)
    expected_sum = ranks * (ranks + 1) / 2
    executors = {(r["worker_dir"], r["executor"]) for r in results}
    return {"range_count": count, "task_executors": sorted({f"{t['worker_dir']}#{t['executor']}" for t in tasks}),
            "pipeline_from": sorted({t["pipeline_from"] for t in tasks}),
            "python": sorted({t["python"] for t in tasks}), "ranks": results,
            "distinct_rank_executors": len(executors),
            "ok": count == 100_000 and len(executors) == ranks and all(r["sum"] == expected_sum for r in results)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2, help="Horovod processes (one per executor)")
    args = parser.parse_args(argv)
    from pyspark.sql import SparkSession
    spark = SparkSession.builder.appName("cluster-check").getOrCreate()
    try:
        report = run_checks(spark, args.ranks)
    finally:
        spark.stop()
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
