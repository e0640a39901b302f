"""The one way to build a SparkSession: what it sets beyond the config."""

import os


def test_no_progress_bar_repaints_when_stderr_is_not_a_terminal(spark):
    """A job's log file or a scheduler's task log gets stage lines, not Spark's console bar (which a Python job
    launched through pyspark-shell would otherwise show). Under pytest stderr is captured, not a terminal."""
    assert spark.sparkContext.getConf().get("spark.ui.showConsoleProgress") == "false"


# Started by the test in a process of its own (the suite's session already runs): the session it builds, what its
# JVM's command line and Hadoop configuration hold, and whether a read through that configuration works.
SECRET_SESSION = """
import json, os, sys
from pipeline.config import SparkConfig
from pipeline.spark import build_spark_session
settings = {"spark.hadoop.fs.s3a.secret.key": "hunter2-secret", "spark.hadoop.fs.s3a.endpoint": "http://127.0.0.1:9"}
spark = build_spark_session(SparkConfig(master="local[1]", settings=settings), "secret-test")
jvms = []  # what this process started: the JVM (spark-submit execs java)
for pid in os.listdir("/proc"):
    try:
        if pid.isdigit() and int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]) == os.getpid():
            jvms.append(open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace"))
    except (OSError, ValueError, IndexError):
        pass
conf = spark.sparkContext._jsc.hadoopConfiguration()
print(json.dumps({"jvm": any("java" in c for c in jvms), "on_a_command_line": any("hunter2" in c for c in jvms),
                  "hadoop": conf.get("fs.s3a.secret.key"), "endpoint": conf.get("fs.s3a.endpoint")}))
"""


def test_a_hadoop_secret_reaches_hadoop_but_no_command_line(tmp_path):
    """A process that starts Spark itself passes every builder setting to spark-submit as --conf k=v: a secret
    there is readable by every user of the machine (ps)."""
    import json
    import subprocess
    import sys

    from pipeline.config import REPO_ROOT
    env = {k: v for k, v in os.environ.items() if k != "PYSPARK_GATEWAY_PORT"}
    proc = subprocess.run([sys.executable, "-c", SECRET_SESSION], capture_output=True, text=True, cwd=REPO_ROOT,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert found == {"jvm": True, "on_a_command_line": False, "hadoop": "hunter2-secret",
                     "endpoint": "http://127.0.0.1:9"}


def test_another_secret_setting_is_refused_in_one_line():
    import pytest

    from pipeline.config import SparkConfig
    from pipeline.errors import PipelineError
    from pipeline.spark import build_spark_session
    with pytest.raises(PipelineError, match=r"^spark\.settings\.spark\.ssl\.keyPassword would be on the Spark JVM's "
                                            r"command line"):
        build_spark_session(SparkConfig(master="local[1]", settings={"spark.ssl.keyPassword": "x"}), "refused")



# A driver started by build_spark_session in a process of its own, with `key=value` settings from its arguments;
# it prints what its JVM says of its compiler and collector.
SMALL_SESSION = """
import sys
from pipeline.config import SparkConfig
from pipeline.spark import build_spark_session
settings = dict(arg.split("=", 1) for arg in sys.argv[1:])
spark = build_spark_session(SparkConfig(master="local[1]", settings=settings), "classes")
spark.range(3).count()
management = spark._jvm.java.lang.management.ManagementFactory
hotspot = management.getPlatformMXBean(spark._jvm.java.lang.Class.forName("com.sun.management.HotSpotDiagnosticMXBean"))
collectors = [gc.getName() for gc in management.getGarbageCollectorMXBeans()]
print(hotspot.getVMOption("TieredStopAtLevel").getValue(), collectors)
"""


def test_a_driver_maps_the_spark_classes_make_setup_recorded_and_compiles_for_a_short_job(tmp_path):
    """`make setup` records the classes a Spark driver loads (pipeline/driver_jvm.py): a driver this environment
    starts maps Spark's classes from that archive instead of loading them from the jars, and runs C1 alone with the
    serial collector. Told not to (a job's own spark.driver.defaultJavaOptions), the same class comes from its jar
    and the JVM runs its server defaults (C2, G1)."""
    import subprocess
    import sys

    from pipeline import driver_jvm
    from pipeline.config import REPO_ROOT
    assert driver_jvm.ARCHIVE.is_file(), "no recorded classes: make spark-classes"
    env = {k: v for k, v in os.environ.items() if k != "PYSPARK_GATEWAY_PORT"}

    def driver_jvm_facts(*settings: str) -> tuple[str, str]:
        log = tmp_path / f"classes-{len(settings)}.log"
        proc = subprocess.run([sys.executable, "-c", SMALL_SESSION,
                               f"spark.driver.extraJavaOptions=-Xlog:class+load=info:file={log}", *settings],
                              cwd=REPO_ROOT, env=env, check=True, capture_output=True, text=True, timeout=300)
        line = next(line for line in log.read_text().splitlines() if " org.apache.spark.sql.SparkSession " in line)
        return line.split(" source: ", 1)[1], proc.stdout.strip().splitlines()[-1]

    assert driver_jvm_facts() == ("shared objects file (top)", "1 ['Copy', 'MarkSweepCompact']")
    source, compiler_and_collector = driver_jvm_facts(f"{driver_jvm.OPTION}=")
    assert source.endswith(".jar")
    assert compiler_and_collector == "4 ['G1 Young Generation', 'G1 Old Generation']"


def test_the_shared_driver_keeps_the_jvms_full_code_cache(spark):
    """C1 alone reserves 48 MB: the suite's driver filled it and died (`Out of space in CodeCache for adapters`)."""
    pools = spark._jvm.java.lang.management.ManagementFactory.getMemoryPoolMXBeans()
    # C1 alone keeps one "CodeCache" pool; with C2 the JVM splits it into three "CodeHeap '...'" pools
    reserved = sum(pool.getUsage().getMax() for pool in pools
                   if pool.getName() == "CodeCache" or pool.getName().startswith("CodeHeap "))
    assert reserved >= 240 << 20


def test_small_data_plans_turn_adaptive_execution_off_for_their_block_only(spark):
    """A small day's queries are planned once (pipeline.spark.small_data_plans); the session's own setting, set or
    not, is back afterwards, also when the block fails: other work in the same session keeps adaptive execution."""
    import pytest

    from pipeline.spark import small_data_plans
    key = "spark.sql.adaptive.enabled"
    before = spark.conf.get(key, None)
    try:
        spark.conf.unset(key)
        with small_data_plans(spark):
            assert spark.conf.get(key) == "false"
        assert spark.conf.get(key, None) is None
        spark.conf.set(key, "true")
        with pytest.raises(ValueError), small_data_plans(spark):
            assert spark.conf.get(key) == "false"
            raise ValueError("the day failed")
        assert spark.conf.get(key) == "true"
    finally:
        if before is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, before)
