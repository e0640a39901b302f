"""Spark's Python worker daemon, with Horovod's task services bound to one interface and their command's lifetime
counted from its start (see pipeline.services).

Set as spark.python.daemon.module: the daemon forks every Python worker, so what is set here holds for the
Horovod task service that horovod.spark.run starts inside a Spark task.
"""
import sys

from pyspark.daemon import manager

from pipeline.services import bind_from_environment, count_command_lifetime_from_its_start


def _forget_pipeline() -> None:
    """Drop this package from the daemon's modules once the binding is made, so that the forked workers import it
    afresh from what the job ships (--py-files), not from wherever the daemon found it."""
    for name in [n for n in sys.modules if n == "pipeline" or n.startswith("pipeline.")]:
        del sys.modules[name]


if __name__ == "__main__":
    bind_from_environment()
    count_command_lifetime_from_its_start()
    _forget_pipeline()
    manager()
