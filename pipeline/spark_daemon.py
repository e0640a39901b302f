"""Spark's Python worker daemon, with Horovod's task services bound to one interface (see pipeline.services).

Set as spark.python.daemon.module: the daemon forks every Python worker, so a binding made here holds for the
Horovod task service that horovod.spark.run starts inside a Spark task.
"""
from pyspark.daemon import manager

from pipeline.services import bind_from_environment

if __name__ == "__main__":
    bind_from_environment()
    manager()
