"""How a Spark driver JVM started from this environment is launched: its recorded classes, its compiler and its
garbage collector. The one place that knows the options; the session builder, the DAGs and the cluster submits ask
it (`spark_settings()`, or `python -m pipeline.driver_jvm` for a command line).

Recorded classes. Before its first query returns, a Spark driver JVM loads and verifies some ten thousand classes
(Spark SQL, Parquet, Arrow, Hadoop): 2-3 s of every job on this machine, a large part of a small day's scoring, and
paid again by each spark-submit a DAG runs. The JDK can record the classes one run loaded into an archive
(`-XX:ArchiveClassesAtExit`, application class-data sharing) and map that archive in a later JVM
(`-XX:SharedArchiveFile`). `make setup` records it (scripts/spark_class_archive.py) into the venv. The JVM checks
the archive against its own build and class path and, when they differ (the JDK or PySpark upgraded, a non-empty
SPARK_CONF_DIR on the class path), loads the classes as before: QUIET silences its warning, which would otherwise
land on a job's stdout. A driver started on another machine from a packed environment finds no archive and goes
without.

Compiler and collector. A 2-core machine counts as a server to the JVM, which then compiles hot code twice (C1, then
the optimising C2) on compiler threads of its own, and collects with G1's concurrent threads. The jobs here run
for seconds to minutes, and C2's compilations cost more CPU than the code they speed up gives back before the JVM
exits: measured side by side (benchmarks/README.md), C1 alone with the serial collector ran a 200-image day in 0.83
of the time, a 40,000-image day in about 0.80, and ingest + prepare of 2,000,000 images in about 0.88. C1 alone also
shrinks the JVM's code cache from 240 MB to 48 MB: a driver that lives for many queries (the test suite's shared
session, a whole-pipeline run) compiles Spark's generated code for each, filled it and died (`Out of space in
CodeCache for adapters`; the queries of four of the suite's test modules compile about 48 MB). Reserving the 240 MB
back costs address space only: the JVM commits the cache as code fills it. A job that should keep the JVM's own
choices sets spark.driver.defaultJavaOptions itself, which replaces these: in its config's `spark.settings` (read by
the session builder and, for the DAGs' spark-submits, by `pipeline.deployment readiness`), or with `--conf` on a
spark-submit line of one's own (a second collector in extraJavaOptions would stop the JVM: two collectors conflict).
Cluster executors keep their cluster's defaults.
"""
from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

ARCHIVE = Path(sys.prefix) / "spark-driver-classes.jsa"
OPTION = "spark.driver.defaultJavaOptions"  # the administrator's layer: a job's extraJavaOptions still apply on top
QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"
COMPILER_AND_COLLECTOR = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -XX:ReservedCodeCacheSize=240m"


def java_options() -> str:
    """The options of a new driver JVM: the compiler and collector, and the recorded archive when there is one."""
    return f"{COMPILER_AND_COLLECTOR} -XX:SharedArchiveFile={ARCHIVE} {QUIET}" if ARCHIVE.is_file() \
        else COMPILER_AND_COLLECTOR


def spark_settings(configured: Mapping[str, str] | None = None) -> dict[str, str]:
    """The Spark settings a new driver started from this environment takes. A job's own value for OPTION in its
    `spark.settings` (`configured`) replaces these options: they are the JVM's to start with, so whoever starts it
    (the session builder, or a DAG's spark-submit) must be told, not the job once its JVM runs."""
    return {OPTION: (configured or {}).get(OPTION, java_options())}


if __name__ == "__main__":  # for a spark-submit command line: --conf spark.driver.defaultJavaOptions="$(...)"
    print(java_options())
