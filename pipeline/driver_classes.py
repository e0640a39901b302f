"""The Spark driver's classes, recorded once and mapped by every later driver JVM started from this environment.

Before its first query returns, a Spark driver JVM loads and verifies some ten thousand classes (Spark SQL,
Parquet, Arrow, Hadoop): 2-3 s of every job on this machine, a large part of a small day's scoring, and paid
again by each spark-submit a DAG runs. The JDK can record the classes one run loaded into an archive
(`-XX:ArchiveClassesAtExit`, application class-data sharing) and map that archive in a later JVM
(`-XX:SharedArchiveFile`). `make setup` records it (scripts/spark_class_archive.py) into the venv.

The JVM checks the archive against its own build and class path and, when they differ (the JDK or PySpark
upgraded, a non-empty SPARK_CONF_DIR on the class path), loads the classes as before: the options below silence
its warning, which would otherwise land on a job's stdout. Cluster executors do not use it; a driver started on
another machine from a packed environment finds no archive and goes without.
"""
from __future__ import annotations

import sys
from pathlib import Path

ARCHIVE = Path(sys.prefix) / "spark-driver-classes.jsa"
OPTION = "spark.driver.defaultJavaOptions"  # the administrator's layer: a job's extraJavaOptions still apply on top
QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"


def java_options() -> str:
    """The options that map the recorded archive into a new driver JVM; empty when none was recorded."""
    return f"-XX:SharedArchiveFile={ARCHIVE} {QUIET}" if ARCHIVE.is_file() else ""


def spark_settings() -> dict[str, str]:
    """The Spark settings a new driver started from this environment takes: none when no archive was recorded."""
    options = java_options()
    return {OPTION: options} if options else {}


if __name__ == "__main__":  # for a spark-submit command line: --conf spark.driver.defaultJavaOptions="$(...)"
    print(java_options())
