"""Pack the project's virtual environment into one archive that YARN or Kubernetes executors unpack and run:

    spark-submit --archives dist/pipeline-env.tar.gz#environment \\
      --conf spark.pyspark.python=./environment/bin/python --py-files dist/pipeline.zip ...

Left out of the archive:
- this checkout's editable install: a finder pointing at the checkout's folder, which no cluster node has (venv-pack
  0.2 does not see it and would pack it); the package ships beside the archive as --py-files dist/pipeline.zip;
- what only a build or a local JVM uses: PySpark's jars (on a cluster, the cluster's Spark runs the JVM), this
  machine's recording of the driver's classes (pipeline/driver_jvm.py),
  TensorFlow's C++ headers, CMake (horovod's build).
The interpreter itself is not in the archive: a venv's bin/python is a link to the Python it was made from, which
every node must have at the same path, or at `--python-prefix` (e.g. /usr when nodes have /usr/bin/python3.11).
Standard library and venv-pack only; the archive is written beside its name and published in one move.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

EDITABLE_INSTALL = ("*/site-packages/__editable__*", "*/site-packages/mnist_spark_pipeline-*.dist-info/*")
BUILD_ONLY = ("*/site-packages/pyspark/jars/*", "spark-driver-classes.jsa", "*/site-packages/tensorflow/include/*",
              "*/site-packages/cmake/*", "*/site-packages/cmake-*.dist-info/*", "bin/cmake", "bin/cpack", "bin/ctest",
              "bin/ccmake")


def args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", default=sys.prefix, help="the environment to pack (default: this Python's)")
    parser.add_argument("--output", required=True, help="the archive: .tar.gz (or .zip, .tar)")
    parser.add_argument("--python-prefix", default=None,
                        help="where the nodes' Python 3.11 lives (its prefix: /usr for /usr/bin/python3.11); "
                             "default: the path it has here")
    parser.add_argument("--compress-level", type=int, default=4, help="gzip level 0-9 (default 4)")
    return parser


def pack(venv: str, output: Path, python_prefix: str | None, compress_level: int) -> None:
    import venv_pack
    env = venv_pack.Env(venv)
    for pattern in (*EDITABLE_INSTALL, *BUILD_ONLY):
        env = env.exclude(pattern)
    partial = output.with_name(f".{output.name}.partial")
    fmt = "zip" if output.suffix == ".zip" else "tar" if output.suffix == ".tar" else "tar.gz"
    try:
        env.pack(output=str(partial), format=fmt, python_prefix=python_prefix, compress_level=compress_level,
                 force=True)
        os.chmod(partial, 0o644)  # venv-pack writes 0600: the archive is for others (YARN, an image build) to read
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    args = args_parser().parse_args(argv)
    output = Path(args.output).resolve()
    output.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    pack(args.venv, output, args.python_prefix, args.compress_level)
    print(f"packed {args.venv} into {output}: {output.stat().st_size / 2**20:.0f} MiB in "
          f"{time.monotonic() - started:.0f} s (the package itself ships as --py-files dist/pipeline.zip)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
