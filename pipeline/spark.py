"""The one way to build a SparkSession: every setting comes from `SparkConfig`."""
from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from pyspark.sql import SparkSession

from pipeline import driver_jvm
from pipeline.config import SparkConfig
from pipeline.errors import PipelineError
from pipeline.redaction import looks_secret
from pipeline.services import DAEMON_MODULE, SERVICES_INTERFACE_ENV, interface_for

HADOOP_PREFIX = "spark.hadoop."  # Spark copies these settings, without it, into the Hadoop configuration


def check_java() -> None:
    """Fail in one line when no JVM can be found (Spark otherwise dies in a long Py4J traceback)."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and not os.path.exists(os.path.join(java_home, "bin", "java")):
        raise PipelineError(f"JAVA_HOME={java_home} has no bin/java: install a JDK 17 or fix JAVA_HOME")
    if not java_home and shutil.which("java") is None:
        raise PipelineError("Java not found: install a JDK 17 (e.g. openjdk-17-jdk-headless) or set JAVA_HOME")


def build_spark_session(cfg: SparkConfig, job_name: str) -> SparkSession:
    """Get or create the session for `job_name` with the configured master, sizing and options."""
    check_java()
    # Python workers must run this interpreter (and its venv), not whatever `python3` is first on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if cfg.master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # read by the JVM at launch; also silences its warning
    builder = (SparkSession.builder
               .appName(f"{cfg.app_name}-{job_name}")
               .config("spark.sql.shuffle.partitions", str(cfg.shuffle_partitions))
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.ui.enabled", str(cfg.ui_enabled).lower())
               .config("spark.driver.memory", cfg.driver_memory)
               .config("spark.sql.parquet.compression.codec", "snappy")
               # The progress bar repaints itself: useful on a terminal, noise in a log file or a scheduler's log.
               .config("spark.ui.showConsoleProgress", str(sys.stderr.isatty()).lower()))
    if cfg.master:
        builder = builder.master(cfg.master)
    if cfg.master.startswith("local"):
        # Local mode: never expose the driver or UI beyond this machine.
        builder = builder.config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1")
        builder = builder.config("spark.ui.host", "127.0.0.1")
    builder = _with_services_interface(builder, cfg)
    if "PYSPARK_GATEWAY_PORT" not in os.environ:  # this process starts the JVM: it can map the recorded classes
        for key, value in driver_jvm.spark_settings(cfg.settings).items():
            builder = builder.config(key, value)
    settings, hadoop_secrets = _secrets_apart(cfg.settings)
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(cfg.log_level)
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in hadoop_secrets.items():  # read from here by every file source, and shipped with its tasks
        hadoop_conf.set(key, value)
    return spark


@contextmanager
def small_data_plans(spark: SparkSession) -> Iterator[None]:
    """Plan the block's queries once, without adaptive execution, then restore the session's setting (tests share
    one session). Adaptive execution re-plans a query at every shuffle, one Spark job per stage: it pays off on
    skewed or large shuffles, and on a few hundred rows it is a fixed cost per query (a 200-image day ran 15 Spark
    jobs with it and 10 without, about a second less in a fresh JVM)."""
    key = "spark.sql.adaptive.enabled"
    before = spark.conf.get(key, None)
    spark.conf.set(key, "false")
    try:
        yield
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)


def _secrets_apart(settings: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(settings for the builder, Hadoop secrets to set once the JVM runs). A Python process that starts Spark
    itself launches the JVM with every builder setting as `--conf key=value` on its command line, which any user
    of the machine can read (ps): secret-looking spark.hadoop.* keys are set on the Hadoop configuration instead,
    and any other secret is refused. Under spark-submit the JVM already runs and settings travel over its
    gateway: nothing to hide."""
    if "PYSPARK_GATEWAY_PORT" in os.environ:
        return dict(settings), {}
    secrets = {key: value for key, value in settings.items() if looks_secret(key)}
    others = sorted(key for key in secrets if not key.startswith(HADOOP_PREFIX))
    if others:
        raise PipelineError(f"spark.settings.{others[0]} would be on the Spark JVM's command line, readable by "
                            "every user of this machine: give it to Spark in a file, e.g. spark-submit "
                            "--properties-file <a file only you can read>, or use its *.file setting if it has one")
    return ({key: value for key, value in settings.items() if key not in secrets},
            {key.removeprefix(HADOOP_PREFIX): value for key, value in secrets.items()})


def _with_services_interface(builder: SparkSession.Builder, cfg: SparkConfig) -> SparkSession.Builder:
    """Tell training and the Python workers which interface Horovod's services may listen on (pipeline.services).

    In local mode the workers are this machine's processes and the daemon module is importable from this
    environment; on a cluster the environment shipped to executors must hold the package to set the daemon
    module (conf/cluster-local.yaml does; docs/cluster.md).
    """
    interface = interface_for(cfg.master, cfg.services_interface)
    if not interface:
        return builder
    builder = builder.config(f"spark.executorEnv.{SERVICES_INTERFACE_ENV}", interface)
    if cfg.master.startswith("local"):
        builder = builder.config("spark.python.daemon.module", DAEMON_MODULE)
    return builder
