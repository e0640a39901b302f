"""Which TCP sockets this test process and everything it started listen on: sampled while a run goes on."""
from __future__ import annotations

import ipaddress
import threading


class ListeningSockets(threading.Thread):
    """Samples, until stopped, the listening TCP sockets of this process and every process it started (the JVM,
    Spark's Python workers, the Horovod ranks they launch)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stopped = threading.Event()
        self.seen: set[tuple[int, str, int]] = set()   # (pid, address, port)

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            self.seen |= listening_sockets()


def listening_sockets() -> set[tuple[int, str, int]]:
    """(pid, address, port) of every listening TCP socket of this process and its descendants."""
    import psutil
    me = psutil.Process()
    family = {me.pid} | {child.pid for child in me.children(recursive=True)}
    return {(c.pid, c.laddr.ip, c.laddr.port) for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.pid in family}


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1, or IPv4 loopback seen through an IPv6 socket (::ffff:127.0.0.1, as the JVM listens)."""
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or bool(getattr(ip, "ipv4_mapped", None) and ip.ipv4_mapped.is_loopback)
