"""Record the classes a Spark driver loads into this venv's class archive (pipeline/driver_jvm.py says why).

`make setup` runs it; run it again (`make spark-classes`) after upgrading the JDK or PySpark. A small job that
touches what the pipeline's jobs touch (Arrow conversions, Parquet both ways, aggregates, a pandas batch function,
JSON) runs under the venv's spark-submit with the JDK's recording option; the archive is written when its JVM exits.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.driver_jvm import ARCHIVE, COMPILER_AND_COLLECTOR, OPTION, QUIET  # noqa: E402


def record() -> None:
    """Run the exercise with the recording option, into a temporary name first: a failed or killed recording never
    leaves half an archive where drivers would map it."""
    partial = ARCHIVE.with_name(f".{ARCHIVE.name}.partial")
    partial.unlink(missing_ok=True)
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    command = [str(Path(sys.executable).parent / "spark-submit"), "--master", "local[2]",
               "--conf", f"{OPTION}={COMPILER_AND_COLLECTOR} -XX:ArchiveClassesAtExit={partial} {QUIET}",
               __file__, "--exercise"]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise SystemExit(f"ERROR [spark-classes]: recording the Spark driver's classes failed: {tail}")
    partial.replace(ARCHIVE)


def exercise() -> None:
    """What the jobs do, once, on a few rows: the classes they load are the ones worth recording."""
    import pandas as pd
    import pyspark.sql.functions as F

    from pipeline.config import SparkConfig
    from pipeline.spark import build_spark_session
    spark = build_spark_session(SparkConfig(master="local[2]", log_level="ERROR"), "spark-class-archive")
    with tempfile.TemporaryDirectory() as tmp:
        frame = pd.DataFrame({"record_id": [f"r{i}" for i in range(64)], "label": [i % 10 for i in range(64)],
                              "image": [[float(i) / 64] * 4 for i in range(64)]})
        df = spark.createDataFrame(frame, "record_id string, label int, image array<float>")
        df.repartition(2).write.option("maxRecordsPerFile", 16).parquet(f"{tmp}/images")
        images = spark.read.parquet(f"{tmp}/images").persist()
        images.groupBy("label").agg(F.count("*").alias("n"), F.mean(F.col("image")[0]).alias("mean")).collect()
        images.agg(F.percentile_approx(F.col("image")[0], [0.1, 0.5], 1000), F.count_if(F.col("label") < 5)).first()
        scored = images.mapInPandas(lambda batches: (b.assign(score=b["label"] * 0.5) for b in batches),
                                    "record_id string, label int, image array<float>, score double")
        scored.select("record_id", "score").write.json(f"{tmp}/scores")
        spark.read.json(f"{tmp}/scores").join(images, "record_id").orderBy("record_id").toPandas()
        images.unpersist()
    spark.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exercise", action="store_true", help=argparse.SUPPRESS)  # the recorded job itself
    if parser.parse_args(argv).exercise:
        exercise()
        return 0
    record()
    print(f"wrote {ARCHIVE} ({ARCHIVE.stat().st_size >> 20} MB): Spark drivers started from {sys.prefix} map the "
          "classes it holds instead of loading them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
