"""What every benchmark records: wall time, the machine and its load, and the driver's peak memory."""
from __future__ import annotations

import os
import platform
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

MB = 1 << 20


class RssSampler:
    """Peak resident memory of this process (the Python driver), of its Java child (Spark's driver JVM, which
    in local mode also hosts the executors) and of the other descendants (Python workers, Horovod ranks),
    sampled in a daemon thread around one stage."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.peak_python_mb = 0.0
        self.peak_jvm_mb = 0.0
        self.peak_workers_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        me = psutil.Process()
        jvm = workers = 0
        for child in me.children(recursive=True):
            try:
                rss = child.memory_info().rss
                if child.name() == "java":
                    jvm += rss
                else:
                    workers += rss
            except psutil.Error:      # a child that just exited
                pass
        self.peak_python_mb = max(self.peak_python_mb, me.memory_info().rss / MB)
        self.peak_jvm_mb = max(self.peak_jvm_mb, jvm / MB)
        self.peak_workers_mb = max(self.peak_workers_mb, workers / MB)

    def as_dict(self) -> dict[str, float]:
        return {"peak_driver_python_mb": round(self.peak_python_mb, 1), "peak_jvm_mb": round(self.peak_jvm_mb, 1),
                "peak_worker_processes_mb": round(self.peak_workers_mb, 1)}


@contextmanager
def measured(record: dict) -> Iterator[dict]:
    """Fill `record` with seconds, load averages before/after and the peak driver memory of the block."""
    record["load_before"] = load_average()
    started = time.perf_counter()
    with RssSampler() as rss:
        yield record
    record["seconds"] = round(time.perf_counter() - started, 3)
    record["load_after"] = load_average()
    record.update(rss.as_dict())


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
    """Cores, memory and the versions of the stack: what a reader needs to compare numbers across machines."""
    from pipeline.versions import package_versions
    memory = psutil.virtual_memory()
    return {"platform": platform.platform(),
            "processor": platform.processor() or platform.machine(), "logical_cores": os.cpu_count(),
            "physical_cores": psutil.cpu_count(logical=False), "memory_gb": round(memory.total / (1 << 30), 1),
            "available_memory_gb": round(memory.available / (1 << 30), 1), "versions": package_versions(),
            "java": _java_version(), "load_average": load_average()}


def _java_version() -> str:
    import subprocess
    try:
        out = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.splitlines()[0] if out else "unknown"


def bytes_under(path: str | Path) -> int:
    """Bytes of every file under a local folder (or one file): what the data costs on disk."""
    path = Path(str(path).removeprefix("file://"))
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
