"""A scheduled deployment for the Airflow tests: a project config under a temp dir on the tiny world, and a real
Airflow for it started by scripts/airflow_service.py (what `make airflow-up` runs), driven by its CLI and its REST
API as a user would."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from pipeline.config import REPO_ROOT

AIRFLOW = REPO_ROOT / ".venv-airflow" / "bin" / "airflow"
SERVICE = REPO_ROOT / "scripts" / "airflow_service.py"
DAILY, RETRAINING = "mnist_daily_scoring", "mnist_retraining"
SPARK_POOL = "mnist_spark"


def write_config(root: Path, tiny_world: Path, **sections) -> Path:
    """conf/scheduled.yaml under `root`: local Spark, outputs under `root`, the tiny world as input, one model of
    one epoch; `sections` replace whole sections."""
    conf = root / "conf" / "scheduled.yaml"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(yaml.safe_dump({
        "spark": {"master": "local[2]", "log_level": "ERROR", "ui_enabled": False, "shuffle_partitions": 4,
                  "driver_memory": "2g"},
        "paths": {"root": str(root), "input": str(tiny_world), "data": "data",
                  "runs": "runs", "landing": "landing", "batches": "batches", "mlflow": "mlflow"},
        "prepare": {"validation_size": 300},
        "data": {"row_group_rows": 100},
        "train": {"models": {"model_1": {"epochs": 1}}},
        "evaluate": {"target_accuracy": 0.5, "misclassified_examples": 0},
        "retrain": {"epochs": 1},
        # The first champion is an untrained network, so the model-side statistics (predicted classes, unsure
        # predictions) would flag every day: here the pixels judge; tests/test_batch_drift.py covers the rest.
        "drift": {"max_class_distance": 1.0, "max_low_confidence_share": 1.0},
        **sections,
    }))
    return conf


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Airflow:
    """The Airflow `make airflow-up` starts, for the config `conf`, with its home under `root`."""

    def __init__(self, root: Path, conf: Path, package: Path, **settings: str):
        self.home = root / "airflow"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.service_env = {**os.environ, "AIRFLOW_HOME": str(self.home), "AIRFLOW_PORT": str(self.port),
                            "MNIST_CONF": str(conf), "MNIST_PACKAGE": str(package), **settings}
        self.cwd = root  # as a deployment runs: nothing may depend on the checkout being the working directory
        self._token: str | None = None

    def service(self, command: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(SERVICE), command], env=self.service_env, cwd=self.cwd,
                              capture_output=True, text=True, timeout=600)

    @property
    def env(self) -> dict[str, str]:
        """The environment `up` wrote to mnist.env, for `airflow` commands run by hand."""
        env = dict(self.service_env)
        for line in (self.home / "mnist.env").read_text().splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = value.strip("'")
        return env

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(AIRFLOW), *args], env=self.env, cwd=self.cwd, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, f"airflow {' '.join(args)}: {(proc.stdout + proc.stderr)[-3000:]}"
        return proc

    def password(self) -> str:
        return json.loads((self.home / "simple_auth_manager_passwords.json").read_text())["admin"]

    def api(self, method: str, path: str, body: dict | None = None) -> dict:
        """One REST call as the admin (a token from /auth/token, as any API client gets one)."""
        if self._token is None:
            self._token = self._request("POST", "/auth/token", {"username": "admin", "password": self.password()},
                                        token=None)["access_token"]
        return self._request(method, f"/api/v2{path}", body, token=self._token)

    def _request(self, method: str, path: str, body: dict | None, token: str | None) -> dict:
        request = urllib.request.Request(f"{self.url}{path}", method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json",
                                                  **({"Authorization": f"Bearer {token}"} if token else {})})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path}: {exc.code} {exc.read().decode()[:2000]}") from None

    def runs(self, dag_id: str) -> list[dict]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict]:
        found = self.api("GET", f"/dags/{dag_id}/dagRuns/{_quoted(run_id)}/taskInstances?limit=100")
        return {ti["task_id"]: ti for ti in found["task_instances"]}

    def wait_for_dags(self, dag_ids: tuple[str, ...], timeout: float = 240) -> None:
        """Until the dag-processor has parsed every DAG in `dag_ids`, or fail with the import errors."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            parsed = {d["dag_id"] for d in self.api("GET", "/dags?limit=100")["dags"]}
            if set(dag_ids) <= parsed:
                return
            time.sleep(2)
        raise AssertionError(f"DAGs not parsed within {timeout}s: {self.api('GET', '/importErrors')}")

    def wait_for_runs(self, dag_id: str, count: int, timeout: float = 900) -> list[dict]:
        """Until `dag_id` has at least `count` runs and none is queued or running; its runs, oldest first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = self.runs(dag_id)
            if len(runs) >= count and all(r["state"] in ("success", "failed") for r in runs):
                return sorted(runs, key=lambda r: r["run_after"])
            time.sleep(3)
        raise AssertionError(f"{dag_id}: runs not done within {timeout}s: "
                             f"{[(r['dag_run_id'], r['state']) for r in self.runs(dag_id)]}")

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        found = self.api("GET", f"/dags/{dag_id}/dagRuns/{_quoted(run_id)}/taskInstances/{task_id}/logs/"
                                f"{try_number}?full_content=true")
        return "\n".join(str(part.get("event", part)) if isinstance(part, dict) else str(part)
                         for part in found.get("content", []))


def _quoted(run_id: str) -> str:
    return urllib.request.quote(run_id, safe="")
