"""Where Horovod's services listen: on one network interface (loopback in local mode), never on every one.

horovod.spark.run starts a driver service and Gloo's rendezvous HTTP server (no authentication) on the driver,
and a task service in every Spark task. Horovod 0.28 binds them all to every interface: its `find_port` opens
('', port), and its `nics` argument only chooses which addresses are advertised and probed. So the modules that
imported `find_port` get one that binds the chosen interface's address. The driver applies it in `run_horovod`;
a Spark Python worker applies it at start through `pipeline.spark_daemon` (spark.python.daemon.module), and
reads the interface from SERVICES_INTERFACE_ENV. tests/test_train.py lists the sockets a 2-rank training opens.
"""
from __future__ import annotations

import os
import socket

from pipeline.errors import PipelineError

SERVICES_INTERFACE_ENV = "PIPELINE_SERVICES_INTERFACE"
LOOPBACK_INTERFACE = "lo"
DAEMON_MODULE = "pipeline.spark_daemon"
# The functions horovod.runner.util.threads runs an event watcher as (`on_event`, wrapped by `in_thread` when silent).
HOROVOD_EVENT_THREADS = ("on_event.<locals>.fn", "in_thread.<locals>.fn")


def interface_for(master: str, configured: str) -> str:
    """The configured interface, or loopback in local mode; "" leaves Horovod's default on a cluster."""
    return configured or (LOOPBACK_INTERFACE if master.startswith("local") else "")


def interface_address(interface: str) -> str:
    """The IPv4 address of `interface` on this host."""
    import psutil
    addresses = psutil.net_if_addrs()
    ipv4 = [a.address for a in addresses.get(interface, []) if a.family == socket.AF_INET]
    if not ipv4:
        raise PipelineError(f"spark.services_interface '{interface}' has no IPv4 address on {socket.gethostname()} "
                            f"(interfaces: {', '.join(sorted(addresses))})")
    return ipv4[0]


def bind_horovod_services(interface: str) -> list:
    """Make every Horovod service started from this process listen on `interface` only. Returns the list that
    collects the servers started from now on (so the caller can close them: see run_horovod)."""
    from horovod.runner.common.util import network as service_network
    from horovod.runner.http import http_server
    from horovod.runner.util import network

    address = interface_address(interface)
    started: list = []

    def find_port(server_factory):
        server = server_factory((address, 0))  # port 0: the kernel picks a free one, no scan needed
        started.append(server)
        return server, server.socket.getsockname()[1]

    for module in (network, service_network, http_server):
        module.find_port = find_port
    return started


def run_horovod(spark, fn, args: tuple = (), num_proc: int = 1, start_timeout: int = 180,
                env: dict[str, str] | None = None, stderr=None) -> list:
    """horovod.spark.run with its services on the session's services interface, closed when it returns.

    The one way this project launches Horovod (training, the cluster check, the smoke test). Horovod stops its
    rendezvous server without closing the socket, which would stay listening for the life of the driver.
    """
    import horovod.spark
    interface = spark.sparkContext.getConf().get(f"spark.executorEnv.{SERVICES_INTERFACE_ENV}", "")
    started = bind_horovod_services(interface) if interface else []
    try:
        return horovod.spark.run(fn, args=args, num_proc=num_proc, start_timeout=start_timeout, env=env,
                                 use_gloo=True, verbose=0, nics={interface} if interface else None,
                                 stderr=stderr)
    finally:
        for server in started:
            server.server_close()


def bind_from_environment() -> None:
    """In a Spark Python worker: bind Horovod's task services as the driver asked (nothing when it did not)."""
    interface = os.environ.get(SERVICES_INTERFACE_ENV)
    if interface:
        bind_horovod_services(interface)


def count_command_lifetime_from_its_start() -> None:
    """In a Spark Python worker: a Horovod task keeps its service up for 3 s after its command *started*, as
    Horovod's own docstring says, not for 3 s after it ended.

    The task service keeps the command's exit code available for a while, so that a client that reconnects to
    ask for it still finds the service (horovod.spark.driver.rsh). Horovod 0.28 starts that timer only once the
    command has returned (`SparkTaskService._run_command` runs the command, then sets it), so every
    horovod.spark.run ended with its Spark tasks asleep for 3 s after training had finished. The driver's rsh
    asks for the exit code right after starting the command, long before a training command ends.
    """
    import threading

    from horovod.runner.common.service.task_service import BasicTaskService
    from horovod.runner.common.util import timeout
    from horovod.spark.task.task_service import SparkTaskService

    def _run_command(self, command, env, event, stdout=None, stderr=None, index=None,
                     prefix_output_with_timestamp=False):
        if self._minimum_command_lifetime_s is not None:
            self._minimum_command_lifetime = timeout.Timeout(self._minimum_command_lifetime_s,
                                                             message="Just measuring runtime")
        before = set(threading.enumerate())
        BasicTaskService._run_command(self, command, env, event, stdout, stderr, index,
                                      prefix_output_with_timestamp)
        # Horovod's safe_shell_exec leaves behind a thread that holds the command's multiprocessing Event and looks
        # at the abort event once a second. Wake it (the command is over: it aborts nothing) and wait for it, so that
        # the Event's semaphores are released before the Spark task ends; otherwise the worker's exit warns of
        # "leaked semaphore objects", which the 3 s sleep used to hide.
        event.set()
        for thread in set(threading.enumerate()) - before:
            if getattr(getattr(thread, "_target", None), "__qualname__", "") in HOROVOD_EVENT_THREADS:
                thread.join()

    SparkTaskService._run_command = _run_command
