"""A Spark standalone cluster on this machine: one master and N workers (1 core each), all on 127.0.0.1.

    cluster.py up       start the master and the workers, wait until every worker is registered
    cluster.py down     stop exactly the processes `up` recorded
    cluster.py status   print the master's view (workers, cores, running applications)

Everything it writes (pid file, logs, worker work dirs) lives under CLUSTER_DIR (default <repo>/cluster,
git-ignored). Ports and sizes come from environment variables so that tests can use free ports:
CLUSTER_MASTER_PORT (7077), CLUSTER_MASTER_UI_PORT (8080), CLUSTER_WORKER_UI_PORT (8081: worker i gets
8081+i), CLUSTER_WORKERS (2), CLUSTER_WORKER_CORES (1), CLUSTER_WORKER_MEMORY (6g), CLUSTER_TIMEOUT (90 s).
Standard library only: it must run before anything is installed on the machine but the venv's PySpark.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from daemons import is_running, start, stop_processes, stop_recorded, wait_until_ready, write_state

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


class ClusterError(Exception):
    """A one-line failure of `up` or `down`, printed as `ERROR: ...` with exit code 1."""


@dataclass(frozen=True)
class Settings:
    cluster_dir: Path
    spark_home: Path
    python: Path
    master_port: int
    master_ui_port: int
    worker_ui_port: int
    workers: int
    worker_cores: int
    worker_memory: str
    timeout: float

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        venv = Path(env.get("CLUSTER_VENV", REPO_ROOT / ".venv"))
        return cls(cluster_dir=Path(env.get("CLUSTER_DIR", REPO_ROOT / "cluster")).resolve(),
                   spark_home=Path(env.get("SPARK_HOME") or _pyspark_home(venv)),
                   python=venv / "bin" / "python",
                   master_port=int(env.get("CLUSTER_MASTER_PORT", 7077)),
                   master_ui_port=int(env.get("CLUSTER_MASTER_UI_PORT", 8080)),
                   worker_ui_port=int(env.get("CLUSTER_WORKER_UI_PORT", 8081)),
                   workers=int(env.get("CLUSTER_WORKERS", 2)),
                   worker_cores=int(env.get("CLUSTER_WORKER_CORES", 1)),
                   worker_memory=env.get("CLUSTER_WORKER_MEMORY", "6g"),
                   timeout=float(env.get("CLUSTER_TIMEOUT", 90)))

    @property
    def master_url(self) -> str:
        return f"spark://{HOST}:{self.master_port}"

    @property
    def status_url(self) -> str:
        return f"http://{HOST}:{self.master_ui_port}/json/"

    @property
    def pid_file(self) -> Path:
        return self.cluster_dir / "pids.json"


def _pyspark_home(venv: Path) -> Path:
    """The PySpark installed in the venv is a complete Spark distribution: use it as SPARK_HOME."""
    matches = sorted(venv.glob("lib/python3*/site-packages/pyspark"))
    if not matches:
        raise ClusterError(f"no PySpark under {venv}: run `make setup` first")
    return matches[0]


def daemon_env(settings: Settings) -> dict[str, str]:
    """Environment of the master and workers (executors inherit it): loopback only, the project's Python."""
    env = dict(os.environ)
    env.update(SPARK_HOME=str(settings.spark_home), SPARK_LOCAL_IP=HOST, SPARK_LOCAL_HOSTNAME="localhost",
               SPARK_CONF_DIR=str(settings.cluster_dir / "conf"), SPARK_LOG_DIR=str(settings.cluster_dir / "logs"),
               # On one machine the venv plays the part of the packed environment shipped with --archives.
               PYSPARK_PYTHON=str(settings.python),
               PATH=f"{settings.python.parent}{os.pathsep}{env.get('PATH', '')}")
    return env


def daemon_commands(settings: Settings) -> list[tuple[str, list[str]]]:
    """(name, argv) of the master, then of every worker: each worker 1 core, its own UI port and work dir."""
    spark_class = str(settings.spark_home / "bin" / "spark-class")
    commands = [("master", [spark_class, "org.apache.spark.deploy.master.Master", "--host", HOST,
                            "--port", str(settings.master_port), "--webui-port", str(settings.master_ui_port)])]
    for i in range(1, settings.workers + 1):
        work_dir = settings.cluster_dir / "work" / f"worker-{i}"
        commands.append((f"worker-{i}", [
            spark_class, "org.apache.spark.deploy.worker.Worker", "--host", HOST,
            "--cores", str(settings.worker_cores), "--memory", settings.worker_memory,
            "--webui-port", str(settings.worker_ui_port + i - 1), "--work-dir", str(work_dir),
            settings.master_url]))
    return commands


def master_status(settings: Settings, timeout: float = 2.0) -> dict | None:
    """The master's JSON status page, or None while it is not answering."""
    try:
        with urllib.request.urlopen(settings.status_url, timeout=timeout) as response:
            return json.load(response)
    except (OSError, ValueError):
        return None


def alive_workers(status: dict | None) -> int:
    return sum(1 for w in (status or {}).get("workers", []) if w.get("state") == "ALIVE")


def up(settings: Settings) -> dict:
    """Start the master and the workers; return the recorded state once every worker is registered."""
    if _recorded_alive(settings):
        raise ClusterError(f"a cluster is already running from {settings.pid_file} (run `make cluster-down`)")
    _check_ports_free(settings)
    (settings.cluster_dir / "conf").mkdir(parents=True, exist_ok=True)
    (settings.cluster_dir / "logs").mkdir(parents=True, exist_ok=True)
    state = {"master_url": settings.master_url, "status_url": settings.status_url, "processes": []}
    try:
        for name, argv in daemon_commands(settings):
            state["processes"].append(_start(settings, name, argv))
            write_state(settings.pid_file, state)  # after every start: `down` can stop a half-started cluster
        _wait_for_workers(settings, state)
    except BaseException:
        stop_processes(state["processes"])
        settings.pid_file.unlink(missing_ok=True)
        raise
    return state


def _start(settings: Settings, name: str, argv: list[str]) -> dict:
    return start(name, argv, daemon_env(settings), settings.cluster_dir / "logs" / f"{name}.log", settings.cluster_dir)


def _wait_for_workers(settings: Settings, state: dict) -> None:
    problem = wait_until_ready(state["processes"], lambda: alive_workers(master_status(settings)) >= settings.workers,
                               settings.timeout)
    if problem == "timeout":
        found = alive_workers(master_status(settings))
        problem = (f"only {found} of {settings.workers} workers registered with {settings.master_url} within "
                   f"{settings.timeout:.0f}s (logs: {settings.cluster_dir / 'logs'})")
    if problem:
        raise ClusterError(problem)


def down(settings: Settings) -> list[str]:
    """Stop exactly the recorded processes (workers first); return the names of those that were running."""
    return stop_recorded(settings.pid_file)













def _recorded_alive(settings: Settings) -> bool:
    if not settings.pid_file.exists():
        return False
    return any(is_running(p) for p in json.loads(settings.pid_file.read_text())["processes"])


def _check_ports_free(settings: Settings) -> None:
    ports = [settings.master_port, settings.master_ui_port,
             *range(settings.worker_ui_port, settings.worker_ui_port + settings.workers)]
    for port in ports:
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                raise ClusterError(f"port {port} on {HOST} is already in use (set CLUSTER_*_PORT to free ports)")






def _status_line(settings: Settings) -> str:
    status = master_status(settings)
    if status is None:
        return f"no master answering at {settings.status_url}"
    apps = [a.get("name") for a in status.get("activeapps", [])]
    return (f"{settings.master_url}: {alive_workers(status)} alive workers, {status.get('cores')} cores, "
            f"running apps: {', '.join(apps) or 'none'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        if args.command == "up":
            up(settings)
            print(f"cluster up: {_status_line(settings)}; UI http://{HOST}:{settings.master_ui_port}, "
                  f"logs in {settings.cluster_dir / 'logs'}")
        elif args.command == "down":
            stopped = down(settings)
            print(f"cluster down: stopped {', '.join(stopped)}" if stopped else "cluster down: nothing was running")
        else:
            print(_status_line(settings))
        return 0
    except ClusterError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
