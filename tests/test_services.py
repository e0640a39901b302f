"""Horovod's task service as pipeline.services leaves it: its command's lifetime counted from the start.

The loopback binding of every service is sampled while a real training runs (tests/test_pipeline_e2e.py)."""
from __future__ import annotations

import os
import threading

import pytest

from pipeline.services import bind_horovod_services, count_command_lifetime_from_its_start

pytestmark = pytest.mark.horovod


def test_a_task_service_does_not_sleep_after_a_command_that_outlived_its_minimum_lifetime(monkeypatch):
    """Horovod 0.28 started the 3 s timer when the command returned: every launch ended 3 s late. The sleep also
    hid a thread of Horovod's that kept the command's semaphores a second longer."""
    from horovod.runner.common.util import secret
    from horovod.spark.task.task_service import SparkTaskService
    monkeypatch.setattr(SparkTaskService, "_run_command", SparkTaskService._run_command)  # restored afterwards
    count_command_lifetime_from_its_start()
    servers = bind_horovod_services("lo")
    service = SparkTaskService(0, secret.make_secret_key(), nics=None, minimum_command_lifetime_s=1.0)
    try:
        before = set(threading.enumerate())
        # As the service's command thread runs it (a client's RunCommandRequest), here in this thread.
        service._run_command("sleep 1.5", dict(os.environ), threading.Event())
        # What wait_for_command_termination would still sleep: nothing, 1.5 s after the command started.
        assert service._minimum_command_lifetime.remaining() == 0
        # And no thread the command started is left: not the one holding its multiprocessing Event, whose semaphores
        # are released now, not up to a second later (after a Spark task's end, the worker's exit warned of leaked
        # semaphores).
        assert not [t.name for t in set(threading.enumerate()) - before if t.is_alive()]
    finally:
        service.shutdown()
        for server in servers:
            server.server_close()


def test_every_spark_python_worker_counts_the_lifetime_from_the_start(spark):
    """The daemon (pipeline.spark_daemon) applies it before it forks the workers that run Horovod's tasks."""
    def where_defined(_):
        from horovod.spark.task.task_service import SparkTaskService
        yield SparkTaskService._run_command.__module__
    assert set(spark.sparkContext.parallelize(range(2), 2).mapPartitions(where_defined).collect()) == \
        {"pipeline.services"}
