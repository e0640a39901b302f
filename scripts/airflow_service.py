"""A real Airflow for this checkout: api-server, scheduler, dag-processor and triggerer, on 127.0.0.1 only.

    airflow_service.py up       write the deployment's environment, migrate the metadata, create the Spark pool,
                                start the four components, wait until they report healthy, print the login
    airflow_service.py down     stop exactly the processes `up` recorded, and their children
    airflow_service.py status   each component, and the api-server's health report

Everything lives under AIRFLOW_HOME (default <repo>/output/airflow): airflow.db (SQLite), mnist.env (the
deployment's environment: source it before running `airflow` commands by hand), logs/, pids.json and the admin
password file. The executor is LocalExecutor; examples are off; the api-server listens on 127.0.0.1:AIRFLOW_PORT
(8280: the Spark cluster's master UI has 8080) and the scheduler and triggerer serve no logs (Airflow binds its log
servers on every interface; on one machine the api-server reads the task logs from disk).

The deployment, from the environment (make airflow-up passes CONF and PROFILE):
  MNIST_CONF (conf/local.yaml), MNIST_PROFILE (full), MNIST_SPARK_SLOTS (1: Spark tasks at once, through the
  pool mnist_spark), MNIST_PACKAGE (dist/pipeline.zip), MNIST_RETRIES (2), AIRFLOW_VENV (.venv-airflow),
  AIRFLOW_TIMEOUT (180 s to become healthy). Standard library only, like scripts/cluster.py.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import socket
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from daemons import is_running, start, stop_processes, stop_recorded, wait_until_ready, write_state

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
ADMIN = "admin"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


class ServiceError(Exception):
    """A one-line failure, printed as `ERROR: ...` with exit code 1."""


@dataclass(frozen=True)
class Settings:
    home: Path
    airflow: Path
    port: int
    conf: Path
    profile: str
    spark_slots: int
    package: Path
    retries: int
    timeout: float

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        venv = Path(env.get("AIRFLOW_VENV", REPO_ROOT / ".venv-airflow"))
        settings = cls(home=Path(env.get("AIRFLOW_HOME", REPO_ROOT / "output" / "airflow")).resolve(),
                       airflow=venv / "bin" / "airflow",
                       port=int(env.get("AIRFLOW_PORT", 8280)),
                       conf=Path(env.get("MNIST_CONF", REPO_ROOT / "conf" / "local.yaml")).resolve(),
                       profile=env.get("MNIST_PROFILE", "full"),
                       spark_slots=int(env.get("MNIST_SPARK_SLOTS", 1)),
                       package=Path(env.get("MNIST_PACKAGE", REPO_ROOT / "dist" / "pipeline.zip")).resolve(),
                       retries=int(env.get("MNIST_RETRIES", 2)),
                       timeout=float(env.get("AIRFLOW_TIMEOUT", 180)))
        if not settings.airflow.exists():
            raise ServiceError(f"{settings.airflow} not found: run `make airflow-setup` first")
        if settings.spark_slots < 1:
            raise ServiceError(f"MNIST_SPARK_SLOTS={settings.spark_slots}: at least 1 Spark task must be able to run")
        return settings

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "pids.json"

    @property
    def env_file(self) -> Path:
        return self.home / "mnist.env"

    @property
    def passwords_file(self) -> Path:
        return self.home / "simple_auth_manager_passwords.json"


def deployment_env(settings: Settings) -> dict[str, str]:
    """The deployment's environment: every component, every task and every `airflow` command run by hand."""
    secret_file = settings.home / "secrets.json"
    if not secret_file.exists():  # kept across restarts: the components must agree on them
        _write_private(secret_file, json.dumps({"jwt": secrets.token_urlsafe(32), "api": secrets.token_urlsafe(32)}))
    secret = json.loads(secret_file.read_text())
    return {
        "AIRFLOW_HOME": str(settings.home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "dags" / "plugins"),  # the DAGs' timetable
        # Every component and command writes to one SQLite file: wait for each other longer (dags/plugins).
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "mnist_sqlite.CONNECT_ARGS",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": "mnist_sqlite.CONNECT_ARGS_ASYNC",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{settings.url}/execution/",
        "AIRFLOW__API__HOST": HOST,
        "AIRFLOW__API__PORT": str(settings.port),
        "AIRFLOW__API__BASE_URL": settings.url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__SECRET_KEY": secret["api"],
        "AIRFLOW__API_AUTH__JWT_SECRET": secret["jwt"],
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(settings.passwords_file),
        # The DAGs ask the project's Python about the deployment at every parse (pipeline/deployment.py): every
        # two minutes is enough to notice a `make run` that made it ready.
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "120",
        "MNIST_PROJECT": str(REPO_ROOT),
        "MNIST_CONF": str(settings.conf),
        "MNIST_PROFILE": settings.profile,
        "MNIST_PACKAGE": str(settings.package),
        "MNIST_RETRIES": str(settings.retries),
    }


def up(settings: Settings) -> dict:
    """Start the four components; return the recorded state once the api-server reports them all healthy."""
    if _recorded_alive(settings):
        raise ServiceError(f"Airflow is already running from {settings.pid_file} (run `make airflow-down`)")
    with socket.socket() as sock:
        if sock.connect_ex((HOST, settings.port)) == 0:
            raise ServiceError(f"port {settings.port} on {HOST} is already in use (set AIRFLOW_PORT to a free port)")
    if not settings.conf.is_file():
        raise ServiceError(f"MNIST_CONF {settings.conf} is not a file")
    (settings.home / "logs").mkdir(parents=True, exist_ok=True)
    env = deployment_env(settings)
    _write_private(settings.env_file, "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(env.items())))
    if not settings.passwords_file.exists():
        _write_private(settings.passwords_file, json.dumps({ADMIN: secrets.token_urlsafe(12)}))
    full_env = {**os.environ, **env}
    _airflow(settings, full_env, "db", "migrate")
    _airflow(settings, full_env, "pools", "set", "mnist_spark", str(settings.spark_slots),
             "Spark jobs at once: every Spark task of the MNIST DAGs takes a slot")
    state = {"url": settings.url, "processes": []}
    commands = {"api-server": ["api-server"], "scheduler": ["scheduler", "--skip-serve-logs"],
                "dag-processor": ["dag-processor"], "triggerer": ["triggerer", "--skip-serve-logs"]}
    try:
        for name in COMPONENTS:
            state["processes"].append(start(name, [str(settings.airflow), *commands[name]], full_env,
                                            settings.home / "logs" / f"{name}.log", settings.home))
            write_state(settings.pid_file, state)  # after every start: `down` can stop a half-started Airflow
        _wait_until_healthy(settings, state)
    except BaseException:
        stop_processes(state["processes"])
        settings.pid_file.unlink(missing_ok=True)
        raise
    return state


def _airflow(settings: Settings, env: dict[str, str], *args: str) -> None:
    proc = subprocess.run([str(settings.airflow), *args], env=env, cwd=settings.home, capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        raise ServiceError(f"airflow {' '.join(args[:2])} failed: {_last_line_of(proc.stderr or proc.stdout)}")


def health(settings: Settings, timeout: float = 2.0) -> dict | None:
    """The api-server's health report ({component: {"status": ...}}), or None while it is not answering."""
    try:
        with urllib.request.urlopen(f"{settings.url}/api/v2/monitor/health", timeout=timeout) as response:
            return json.load(response)
    except (OSError, ValueError):
        return None


def unhealthy(report: dict | None) -> list[str]:
    if report is None:
        return ["api-server"]
    return [name for name, part in report.items() if (part or {}).get("status") != "healthy"]


def _wait_until_healthy(settings: Settings, state: dict) -> None:
    problem = wait_until_ready(state["processes"], lambda: not unhealthy(health(settings)), settings.timeout)
    if problem == "timeout":
        problem = (f"not healthy within {settings.timeout:.0f}s: {', '.join(unhealthy(health(settings)))} "
                   f"(logs: {settings.home / 'logs'})")
    if problem:
        raise ServiceError(problem)


def down(settings: Settings) -> list[str]:
    """Stop exactly the recorded processes and their process groups; the names of those that were running."""
    return stop_recorded(settings.pid_file, grace=30.0)



def _recorded_alive(settings: Settings) -> bool:
    if not settings.pid_file.exists():
        return False
    return any(is_running(p) for p in json.loads(settings.pid_file.read_text())["processes"])


def _write_private(path: Path, text: str) -> None:
    """`text` at `path`, readable by this user only (it holds a password or a secret)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def _last_line_of(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _status_lines(settings: Settings) -> list[str]:
    processes = json.loads(settings.pid_file.read_text())["processes"] if settings.pid_file.exists() else []
    if not processes:
        return [f"Airflow is not running from {settings.home}"]
    report = health(settings)
    lines = [f"{p['name']}: {'running' if is_running(p) else 'STOPPED'} (pid {p['pid']}, log {p['log']})"
             for p in processes]
    lines.append(f"health at {settings.url}: " + ("no answer" if report is None else
                 ", ".join(f"{name} {(part or {}).get('status')}" for name, part in report.items())))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "down", "status"))
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        if args.command == "up":
            up(settings)
            password = json.loads(settings.passwords_file.read_text())[ADMIN]
            print(f"Airflow up: {settings.url} (login {ADMIN} / {password}), config {settings.conf} profile "
                  f"{settings.profile}, {settings.spark_slots} Spark slot(s) in pool mnist_spark\n"
                  f"  logs: {settings.home / 'logs'} (tasks: {settings.home / 'logs' / 'dag_id=*'})\n"
                  f"  by hand: source {settings.env_file} && {settings.airflow} dags list")
        elif args.command == "down":
            stopped = down(settings)
            print(f"Airflow down: stopped {', '.join(stopped)}" if stopped else "Airflow down: nothing was running")
        else:
            print("\n".join(_status_lines(settings)))
        return 0
    except ServiceError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
