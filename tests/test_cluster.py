"""The pipeline on a real Spark standalone cluster (a master and two 1-core workers on 127.0.0.1), submitted with
spark-submit exactly as the README says, with the cluster always brought down, also when a test fails.

No test waits a fixed time: each waits for an event (a file, a log line, a process, the driver's REST status) up
to a bound, and fails naming the event that did not come. The jobs run the test profile on the tiny world
(tests/tiny_world.py) with one model. The tests share one module cluster, which the last of them stops (`down`
with an executor on each worker); the test that kills a worker gets a cluster of its own. Every test also runs
alone.

Which executor ran each task is read from the driver's Spark event log, one log folder per submitted job.
"""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from tiny_world import PROFILE, TEST_IMAGES, TRAIN_IMAGES

from pipeline import driver_jvm
from pipeline.config import REPO_ROOT, load_config
from pipeline.errors import EXIT_RETRYABLE

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.horovod]

PYTHON = str(REPO_ROOT / ".venv" / "bin" / "python")
SPARK_SUBMIT = str(REPO_ROOT / ".venv" / "bin" / "spark-submit")
AIRFLOW = str(REPO_ROOT / ".venv-airflow" / "bin" / "airflow")
CLUSTER_SCRIPT = str(REPO_ROOT / "scripts" / "cluster.py")
REPORT_SECTIONS = 10
ONE_MODEL = "train.models={model_1: {epochs: 2}}"    # one Horovod run proves the cluster's ranks
QUICK = load_config(REPO_ROOT / "conf" / "cluster-local.yaml", PROFILE, [ONE_MODEL])
RESUME_EPOCHS = 3

# A driver that waits for an executor on every worker, runs Python tasks on both (each executor starts its Python
# workers), says so, then holds them until the test kills it.
HOLD_EXECUTORS = """
import threading, time
from pyspark.sql import SparkSession
spark = SparkSession.builder.appName("hold-executors").config("spark.executor.memory", "512m").getOrCreate()
while spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() < 3:  # the driver and two executors
    time.sleep(0.1)
spark.sparkContext.parallelize(range(8), 8).map(lambda x: x * x).sum()
print("holding", flush=True)
threading.Event().wait()
"""

# spark-class of a Spark home whose master is the real one and whose workers never register: they only wait,
# with the worker's arguments (hence the cluster's folder) on their command line.
NEVER_REGISTERING_WORKERS = """#!/usr/bin/env bash
case "$1" in
  *.Worker) exec {python} -c 'import signal; signal.pause()' "$@" ;;
  *) SPARK_HOME={spark_home} exec {spark_home}/bin/spark-class "$@" ;;
esac
"""


def free_port() -> int:
    """A port free now, below the kernel's ephemeral range: a port picked from that range could be handed to any
    process binding port 0 before the service it was picked for binds it (py4j's gateway took a UI port so)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        port = random.randrange(20000, low - 1)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between 20000 and {low}")


def free_ports(count: int) -> list[int]:
    """`count` ports free right now; the last two consecutive (worker UI ports are base, base + 1)."""
    for _ in range(50):
        ports = [free_port() for _ in range(count - 1)]
        base = ports[-1]
        if _is_free(base + 1) and base + 1 not in ports:
            return [*ports, base + 1]
    raise RuntimeError("no free consecutive ports found")


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


class Cluster:
    """A cluster started by scripts/cluster.py on free ports, its state under `root`."""

    def __init__(self, root: Path, tiny_world: Path | None = None, **env: str):
        master, master_ui, worker_ui, _ = free_ports(4)
        self.root, self.tiny_world = root, tiny_world
        self.master_url = f"spark://127.0.0.1:{master}"
        self.env = {**os.environ, "CLUSTER_DIR": str(root / "cluster"), "CLUSTER_MASTER_PORT": str(master),
                    "CLUSTER_MASTER_UI_PORT": str(master_ui), "CLUSTER_WORKER_UI_PORT": str(worker_ui),
                    "CLUSTER_TIMEOUT": "120", "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": PYTHON, **env}

    def script(self, command: str) -> subprocess.CompletedProcess:
        return subprocess.run([PYTHON, CLUSTER_SCRIPT, command], env=self.env, capture_output=True, text=True,
                              timeout=180)

    @property
    def processes(self) -> dict[str, int]:
        state = json.loads((self.root / "cluster" / "pids.json").read_text())
        return {p["name"]: p["pid"] for p in state["processes"]}

    def submit(self, job: str, *args: str, log_name: str, timeout: float = 900) -> subprocess.Popen:
        """spark-submit `job` with the shipped package and wait for it; its output is kept in `root/log_name`."""
        proc = self.start(job, *args, log_name=log_name)
        return finish(proc, timeout)

    def start(self, job: str | Path, *args: str, log_name: str) -> subprocess.Popen:
        """spark-submit `job` (relative to the repo, or absolute) in a session of its own, so that a test can stop
        the driver's whole process tree; Spark's event log goes to `self.events(log_name)`."""
        conf = ["--conf=spark.eventLog.enabled=true", f"--conf=spark.eventLog.dir=file://{self.events(log_name)}",
                f"--conf={driver_jvm.OPTION}={driver_jvm.java_options()}"]  # as the Makefile's SPARK_SUBMIT
        argv = [SPARK_SUBMIT, "--master", self.master_url, "--py-files", str(REPO_ROOT / "dist" / "pipeline.zip"),
                "--driver-memory", "2g", *conf, str(REPO_ROOT / job), *args]
        log = open(self.root / log_name, "w")
        proc = subprocess.Popen(argv, env=self.env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        proc.log_path, proc.log_file = self.root / log_name, log
        return proc

    def pipeline_args(self, out: Path) -> list[str]:
        """The test profile on the tiny world, one model, on this cluster, every output under `out`."""
        return ["--conf", "conf/cluster-local.yaml", "--profile", PROFILE, "--set", f"spark.master={self.master_url}",
                "--set", f"paths.input={self.tiny_world}", "--set", f"paths.data={out / 'data'}",
                "--set", f"paths.runs={out / 'runs'}", "--set", f"paths.mlflow={out / 'mlflow'}", "--set", ONE_MODEL]

    def events(self, log_name: str) -> Path:
        path = self.root / "events" / Path(log_name).stem
        path.mkdir(parents=True, exist_ok=True)
        return path


@contextlib.contextmanager
def running_cluster(root: Path, tiny_world: Path):
    """A cluster that is up inside the block and down after it, whatever happened (even when `up` failed
    half-way)."""
    cluster = Cluster(root, tiny_world)
    try:
        started = cluster.script("up")
        assert started.returncode == 0, f"cluster.py up failed: {started.stderr}"
        yield cluster
    finally:
        cluster.script("down")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, dist, tiny_world):
    """The module's shared cluster: its tests may kill an executor, never a worker or a daemon; the module's last
    test stops it (and `down` after that finds nothing to stop)."""
    with running_cluster(tmp_path_factory.mktemp("cluster"), tiny_world) as cluster:
        yield cluster


@pytest.fixture
def own_cluster(tmp_path, dist, tiny_world):
    """A cluster for the test that kills a worker."""
    with running_cluster(tmp_path, tiny_world) as cluster:
        yield cluster


@pytest.fixture
def job_cleanup():
    """Jobs a test `start`s and registers here are stopped (their whole process group) when the test ends."""
    jobs: list[subprocess.Popen] = []
    yield jobs.append
    for proc in jobs:
        if proc.poll() is None:
            stop_job(proc)


def finish(proc: subprocess.Popen, timeout: float) -> subprocess.Popen:
    """Wait for a submitted job; past `timeout` stop its whole process group and fail the test."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_job(proc)
        pytest.fail(f"{proc.log_path.name}: no result within {timeout:.0f}s (hung?)\n{tail(read_log(proc))}")
    finally:
        proc.log_file.close()
    proc.log = read_log(proc)
    return proc


def stop_job(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.log_file.close()


def wait_for(condition: Callable, what: str, timeout: float, job: subprocess.Popen | None = None,
             every: float = 0.2):
    """Poll `condition` until it returns something truthy and return that. Fail, naming `what` was awaited, when
    `timeout` seconds pass or `job` ends first (a job still running then is stopped)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if job is not None and job.poll() is not None:
            job.log_file.close()
            pytest.fail(f"{job.log_path.name}: job ended (code {job.returncode}) before {what}\n"
                        f"{tail(read_log(job))}")
        if time.monotonic() > deadline:
            if job is None:
                pytest.fail(f"no {what} within {timeout:.0f}s")
            stop_job(job)
            pytest.fail(f"{job.log_path.name}: no {what} within {timeout:.0f}s\n{tail(read_log(job))}")
        time.sleep(every)


def read_log(proc: subprocess.Popen) -> str:
    return proc.log_path.read_text(errors="replace")


def tail(text: str, lines: int = 25) -> str:
    """The last lines of a spark-submit log without Spark's INFO chatter: what an assertion message should show."""
    return "\n".join([line for line in text.splitlines() if " INFO " not in line][-lines:])


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def spark_events(event_dir: Path) -> list[dict]:
    """Every event of every application logged under `event_dir`, in order."""
    return [json.loads(line) for path in sorted(event_dir.iterdir())
            for line in path.read_text(errors="replace").splitlines()]


def horovod_executors(event_dir: Path) -> list[set[str]]:
    """For each horovod.spark.run job in the event logs, the executor ids of its finished tasks."""
    groups: dict[int, str] = {}
    stage_job: dict[int, int] = {}
    executors: dict[str, set[str]] = {}
    for event in spark_events(event_dir):
        kind = event.get("Event")
        if kind == "SparkListenerJobStart":
            group = (event.get("Properties") or {}).get("spark.jobGroup.id", "")
            if group.startswith("horovod.spark.run"):
                groups[event["Job ID"]] = group
                stage_job.update({s: event["Job ID"] for s in event["Stage IDs"]})
        elif kind == "SparkListenerTaskEnd" and event["Stage ID"] in stage_job:
            group = groups[stage_job[event["Stage ID"]]]
            executors.setdefault(group, set()).add(event["Task Info"]["Executor ID"])
    return list(executors.values())


def task_ends(event_dir: Path) -> list[dict]:
    """(task id, stage id, partition index, executor id, end reason) of every finished task in the event logs."""
    return [{"task": e["Task Info"]["Task ID"], "stage": e["Stage ID"], "index": e["Task Info"]["Index"],
             "executor": e["Task Info"]["Executor ID"], "reason": e["Task End Reason"]["Reason"]}
            for e in spark_events(event_dir) if e.get("Event") == "SparkListenerTaskEnd"]


# --- processes: executors, freezing, leftovers -----------------------------------------------------------------

@dataclass(frozen=True)
class Executor:
    pid: int
    id: str     # Spark's executor id: a standalone worker runs it in <work-dir>/<app-id>/<executor-id>


def executor_of(cluster: Cluster, worker: str) -> Executor | None:
    """The live executor JVM that `worker` launched (its working directory is under the worker's), if any."""
    work_dir = cluster.root / "cluster" / "work" / worker
    for pid in processes_mentioning("CoarseGrainedExecutorBackend"):
        with contextlib.suppress(OSError):
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
            if cwd.parent.parent == work_dir and is_alive(pid):
                return Executor(pid, cwd.name)
    return None


def executor_on_every_worker(cluster: Cluster) -> list[Executor] | None:
    executors = [executor_of(cluster, worker) for worker in ("worker-1", "worker-2")]
    return executors if all(executors) else None


def freeze(pids: list[int]) -> float:
    """SIGSTOP `pids` and wait until every thread of each has stopped; return that moment (time.time())."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    wait_for(lambda: all(_all_threads_stopped(pid) for pid in pids), f"stop of processes {pids}", timeout=30,
             every=0.01)
    return time.time()


def thaw(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def _all_threads_stopped(pid: int) -> bool:
    try:
        return all(_state(task) == "T" for task in Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return True  # it has exited


def _state(proc_dir: Path) -> str:
    return (proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[0]


def descendants(pid: int) -> list[int]:
    """Pids of every live process below `pid` in the process tree."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):
            if proc.name.isdigit():
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(proc.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def is_alive(pid: int) -> bool:
    """Running, not a zombie: a killed worker whose parent has gone stays in /proc until init reaps it."""
    try:
        return _state(Path(f"/proc/{pid}")) != "Z"
    except (OSError, IndexError):
        return False


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains `text`."""
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(proc.name))
    return [pid for pid in found if is_alive(pid)]


def cluster_processes(cluster: Cluster) -> list[int]:
    """Live processes of the cluster: its folder on their command line (daemons, executors' classpath) or as
    their working directory (executors and their Python workers)."""
    root = str(cluster.root / "cluster")
    found = set(processes_mentioning(root))
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and os.readlink(proc / "cwd").startswith(root) and is_alive(int(proc.name)):
                found.add(int(proc.name))
    return sorted(found)


# --- the driver's REST status ----------------------------------------------------------------------------------

class DriverStatus:
    """The running tasks of a job's one application, from its driver's REST API (the UI the test turned on)."""

    def __init__(self, ui_port: int):
        self.api = f"http://127.0.0.1:{ui_port}/api/v1"

    def running_tasks(self) -> list[dict]:
        apps = self._get("/applications") or []
        stages = self._get(f"/applications/{apps[0]['id']}/stages?status=active&details=true") if apps else None
        return [task for stage in stages or [] for task in (stage.get("tasks") or {}).values()
                if task["status"] == "RUNNING"]

    def _get(self, path: str):
        try:
            with urllib.request.urlopen(self.api + path, timeout=10) as response:
                return json.load(response)
        except (OSError, ValueError, http.client.HTTPException):
            return None  # the UI is not up yet, or the application is gone


def launched_at(task: dict) -> float:
    """The driver's launch time of a REST task record (milliseconds, GMT) as time.time() seconds."""
    return datetime.strptime(task["launchTime"].replace("GMT", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def freeze_holding_a_lost_task(executor: Executor, driver: DriverStatus, job: subprocess.Popen,
                               timeout: float = 300) -> dict:
    """Freeze `executor` at a moment it holds a task that can no longer finish; return that task (REST record).

    A task the driver launches after the freeze can never run (the frozen JVM never reads it). A task that was
    running at the freeze may have finished unseen; when the job waits on such a task alone, thaw, let it
    finish, and freeze again.
    """
    deadline = time.monotonic() + timeout
    while True:
        frozen_at = freeze([executor.pid])
        launched_after, older = wait_for(
            lambda since=frozen_at: _task_verdict(driver.running_tasks(), executor.id, since),
            f"a task on executor {executor.id} after its freeze", job=job, timeout=deadline - time.monotonic())
        if launched_after:
            return launched_after
        thaw([executor.pid])
        wait_for(lambda task=older["taskId"]: all(t["taskId"] != task for t in driver.running_tasks()),
                 f"end of task {older['taskId']} on thawed executor {executor.id}", job=job,
                 timeout=deadline - time.monotonic())


def _task_verdict(running: list[dict], executor_id: str, frozen_at: float) -> tuple[dict | None, dict | None]:
    """(a task launched on the executor after `frozen_at`, None), or (None, its older task) when nothing but that
    task runs anywhere, or () to keep waiting."""
    on_it = [t for t in running if t["executorId"] == executor_id]
    launched_after = [t for t in on_it if launched_at(t) > frozen_at]
    if launched_after:
        return launched_after[0], None
    if on_it and len(on_it) == len(running):
        return None, on_it[0]
    return ()


# --- the shared cluster ----------------------------------------------------------------------------------------

def test_cluster_up_registers_two_one_core_workers(cluster):
    status = cluster.script("status")
    assert status.returncode == 0
    assert re.match(rf"{cluster.master_url}: 2 alive workers, 2 cores", status.stdout)
    assert sorted(cluster.processes) == ["master", "worker-1", "worker-2"]


def test_cluster_up_refuses_a_second_start(cluster):
    again = cluster.script("up")
    assert again.returncode == 1
    assert again.stderr.strip() == (f"ERROR: a cluster is already running from {cluster.root}/cluster/pids.json "
                                    "(run `make cluster-down`)")


@pytest.fixture(scope="module")
def quick_run(cluster):
    out = cluster.root / "out"
    proc = cluster.submit("jobs/run_pipeline.py", *cluster.pipeline_args(out), "--run-id", "cluster-quick",
                          log_name="quick.log")
    assert proc.returncode == 0, tail(proc.log)
    return out, proc


def test_quick_pipeline_on_cluster_writes_every_output(quick_run):
    out, _ = quick_run
    curated = json.loads(next((out / "data").glob("ingest-*/curated-*/manifest.json")).read_text())
    # The test profile keeps 300 of the tiny world's 3,000 training images for validation.
    assert curated["counts"] == {"train": TRAIN_IMAGES - QUICK.prepare.validation_size,
                                 "validation": QUICK.prepare.validation_size, "test": TEST_IMAGES}
    for split in ("train", "validation", "test"):
        assert sum(curated["label_counts"][split].values()) == curated["counts"][split]
    run = out / "runs" / "cluster-quick"
    for model in QUICK.train.models:
        history = json.loads((run / "train" / model / "history.json").read_text())
        assert history["complete"] and history["num_workers"] == 2
        assert history["epochs_completed"] == QUICK.train.models[model].epochs
        assert (run / "train" / model / "model.keras").stat().st_size > 10_000
    best = json.loads((run / "evaluate" / "best_model.json").read_text())
    assert best["model"] in QUICK.train.models and 0.5 < best["test_accuracy"] <= 1.0
    report = (run / "report.md").read_text()
    assert len(re.findall(r"^## ", report, flags=re.M)) == REPORT_SECTIONS


def test_every_horovod_run_spans_both_executors(cluster, quick_run):
    runs = horovod_executors(cluster.events("quick.log"))
    assert len(runs) == len(QUICK.train.models)  # one horovod.spark.run per model
    assert all(len(executors) == 2 for executors in runs), runs


def test_horovod_rank_lost_fails_fast_then_rerun_resumes_from_checkpoint(cluster, quick_run, job_cleanup):
    """Kill the executor of one rank after the first checkpoint: one clear error line, no hang; the rerun
    resumes at the checkpointed epoch. The worker stays up, so the master gives the app a new executor.

    The executor and its processes (the rank among them) are frozen first: with one rank stopped the other
    blocks in its next allreduce, so training cannot get past the checkpoint read after the freeze."""
    out, _ = quick_run
    args = [*cluster.pipeline_args(out), "--model", "model_1", "--set", f"train.models.model_1.epochs={RESUME_EPOCHS}",
            "--run-id", "cluster-resume"]
    model_dir = out / "runs" / "cluster-resume" / "train" / "model_1"
    proc = cluster.start("jobs/train.py", *args, log_name="train-killed.log")
    job_cleanup(proc)
    wait_for(lambda: read_json(model_dir / "checkpoint" / "state.json"), "first checkpoint of model_1", job=proc,
             timeout=420)
    executor = wait_for(lambda: executor_of(cluster, "worker-2"), "executor on worker-2", job=proc, timeout=60)
    frozen = [executor.pid, *descendants(executor.pid)]
    assert any("horovod.spark.task.gloo_exec_fn" in command_line(pid) for pid in frozen), "no rank under the executor"
    freeze(frozen)
    state = read_json(model_dir / "checkpoint" / "state.json")
    os.kill(executor.pid, signal.SIGKILL)
    thaw(frozen)  # what ran under the executor now sees it gone, as after a real loss
    assert state and state["epoch"] <= RESUME_EPOCHS - 2, f"training got too far before the kill: {state}"
    finish(proc, timeout=300)
    assert proc.returncode == EXIT_RETRYABLE, tail(proc.log)  # a lost executor: a retry resumes
    error = [line for line in proc.log.splitlines() if line.startswith("ERROR [train]")]
    assert error and error[0].startswith("ERROR [train]: training model_1 failed on the Horovod workers"), \
        tail(proc.log)
    rerun = cluster.submit("jobs/train.py", *args, log_name="train-resumed.log")
    assert rerun.returncode == 0, tail(rerun.log)
    history = json.loads((model_dir / "history.json").read_text())
    assert history["resumed_from_epoch"] >= state["epoch"] >= 1
    assert history["complete"] and history["epochs_completed"] == RESUME_EPOCHS
    assert [e["epoch"] for e in history["epochs"]] == list(range(1, RESUME_EPOCHS + 1))


def scheduled_cluster_config(cluster: Cluster, out: Path) -> Path:
    """A deployment config for the DAGs: conf/cluster-local.yaml with the quick run's overrides (so the same
    curated data and registry), this cluster's master, and Spark's event log on."""
    conf = yaml.safe_load((REPO_ROOT / "conf" / "cluster-local.yaml").read_text())
    conf["profile"] = PROFILE
    conf["spark"]["master"] = cluster.master_url
    conf["spark"]["settings"].update({"spark.eventLog.enabled": "true",
                                      "spark.eventLog.dir": f"file://{cluster.events('scheduled.log')}"})
    conf["paths"] = {"input": str(cluster.tiny_world), "data": str(out / "data"), "runs": str(out / "runs"),
                     "mlflow": str(out / "mlflow"), "landing": str(out / "landing"), "batches": str(out / "batches")}
    conf["train"]["models"] = yaml.safe_load(ONE_MODEL.split("=", 1)[1])
    conf["batch"] = {"driver_max_images": 0}  # a small day too is scored by the executors' Python workers
    # The drift check runs on the cluster all the same, but its verdict is the quick model's: trained one epoch on
    # the tiny world, its predicted classes on 40 images may stray past the sampling allowance, and "fail" would
    # fail the run on that, which is not what this test is about (tests/test_batch_drift.py is).
    conf["drift"] = {"on_drift": "warn"}
    path = cluster.root / "conf" / "scheduled.yaml"
    shutil.copytree(REPO_ROOT / "conf" / "profiles", path.parent / "profiles", dirs_exist_ok=True)
    path.write_text(yaml.safe_dump(conf))
    return path


def test_a_scheduled_day_is_scored_by_the_cluster_executors_as_in_local_mode(cluster, quick_run, dist, spark):
    """The daily DAG (airflow dags test) with the deployment's config pointing at this cluster: every task a
    spark-submit to its master, the scoring done by its executors, with the rows a local-mode scoring in the
    driver gives."""
    from pipeline.batch.score import run_batch_scoring
    from pipeline.layout import Layout
    out, _ = quick_run
    conf = scheduled_cluster_config(cluster, out)
    ds = "2026-11-24"
    subprocess.run([PYTHON, str(REPO_ROOT / "scripts" / "simulate_arrivals.py"), "--conf", str(conf), "--ds", ds,
                    "--count", "40"], check=True, capture_output=True, timeout=300)
    home = cluster.root / "airflow"
    env = {**cluster.env, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "dags" / "plugins"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "MNIST_CONF": str(conf), "MNIST_PACKAGE": str(dist)}
    for command in (["db", "migrate"], ["dags", "test", "mnist_daily_scoring", "2026-11-25"]):
        proc = subprocess.run([AIRFLOW, *command], env=env, cwd=home.parent, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    events = spark_events(cluster.events("scheduled.log"))
    masters = {e["Spark Properties"]["spark.master"] for e in events
               if e.get("Event") == "SparkListenerEnvironmentUpdate"}
    assert masters == {cluster.master_url}  # score, check_drift and batch_report: every application on the cluster
    executors = {t["executor"] for t in task_ends(cluster.events("scheduled.log")) if t["reason"] == "Success"}
    assert executors and "driver" not in executors, executors
    cfg = load_config(conf)
    on_cluster = spark.read.parquet(Layout.from_config(cfg).batch_files(ds).predictions)
    local_cfg = load_config(conf, None, ["spark.master=local[2]", f"paths.batches={out / 'batches-local'}",
                                         "batch.driver_max_images=5000"])  # locally, in the driver
    run_batch_scoring(spark, local_cfg, Layout.from_config(local_cfg), ds)
    in_local_mode = spark.read.parquet(Layout.from_config(local_cfg).batch_files(ds).predictions)
    def rows(predictions):
        return {r["record_id"]: (r["prediction"], r["model_version"], r["confidence"]) for r in predictions.collect()}
    cluster_rows, local_rows = rows(on_cluster), rows(in_local_mode)
    assert len(cluster_rows) == 40 and cluster_rows.keys() == local_rows.keys()
    for record_id, (prediction, version, confidence) in cluster_rows.items():
        assert (prediction, version) == local_rows[record_id][:2], record_id
        assert confidence == pytest.approx(local_rows[record_id][2], abs=1e-5), record_id


def test_cluster_down_stops_exactly_the_recorded_processes(cluster, quick_run, job_cleanup):
    """With an application holding an executor on each worker: `down` stops the daemons, the executors and
    their Python workers go with their workers, and a second `down` finds nothing. It stops the shared cluster:
    the last test that uses it (it asks for quick_run so that, run alone, it still comes after the run)."""
    holder_script = cluster.root / "hold_executors.py"
    holder_script.write_text(HOLD_EXECUTORS)
    holder = cluster.start(holder_script, log_name="hold.log")
    job_cleanup(holder)
    wait_for(lambda: "holding" in read_log(holder), "Python tasks on both executors", job=holder, timeout=180)
    executors = executor_on_every_worker(cluster)
    assert executors and all(descendants(e.pid) for e in executors), "an executor without Python workers"
    pids = cluster.processes
    stopped = cluster.script("down")
    assert stopped.stdout.strip() == "cluster down: stopped master, worker-1, worker-2", stopped.stderr
    assert not [pid for pid in [*pids.values(), *(e.pid for e in executors)] if is_alive(pid)]
    # The executors' Python workers (a process group of their own) leave when their executor's pipe closes.
    wait_for(lambda: not cluster_processes(cluster), "exit of the executors' Python workers", timeout=60)
    assert cluster.script("down").stdout.strip() == "cluster down: nothing was running"


# --- tests with a cluster of their own -------------------------------------------------------------------------

def test_worker_lost_mid_ingest_retries_on_the_other_and_output_equals_clean_run(own_cluster, quick_run,
                                                                                 job_cleanup):
    """Kill worker-2 (its recorded pid) and its executor while that executor holds an ingest task: the lost task
    reruns on worker-1 and the raw table equals the one of the undisturbed quick run, row for row."""
    import pyarrow.parquet as pq
    out, _ = quick_run
    kill_out, ui_port = own_cluster.root / "out-killed", free_port()
    proc = own_cluster.start("jobs/ingest.py", *own_cluster.pipeline_args(kill_out), "--set", "spark.ui_enabled=true",
                             "--set", f"spark.settings.spark.ui.port={ui_port}", log_name="ingest-killed.log")
    job_cleanup(proc)
    wait_for(lambda: "records in" in read_log(proc), "ingest's parse plan (log line 'records in')", job=proc,
             timeout=300)
    executor = wait_for(lambda: executor_of(own_cluster, "worker-2"), "executor on worker-2", job=proc, timeout=60)
    held = freeze_holding_a_lost_task(executor, DriverStatus(ui_port), proc)
    os.kill(own_cluster.processes["worker-2"], signal.SIGKILL)  # the worker first: it must not relaunch one
    os.kill(executor.pid, signal.SIGKILL)
    finish(proc, timeout=420)
    assert proc.returncode == 0, tail(proc.log)
    ends = task_ends(own_cluster.events("ingest-killed.log"))
    lost = [t for t in ends if t["task"] == held["taskId"]]
    assert [(t["executor"], t["reason"]) for t in lost] == [(executor.id, "ExecutorLostFailure")], ends
    assert [t for t in ends if (t["stage"], t["index"]) == (lost[0]["stage"], lost[0]["index"])
            and t["reason"] == "Success" and t["executor"] != executor.id], f"task {held['taskId']} not rerun"
    clean_root, = (out / "data").glob("ingest-*")
    killed_root = kill_out / "data" / clean_root.name
    clean, killed = (pq.read_table(root / "raw").sort_by("record_id") for root in (clean_root, killed_root))
    assert killed.num_rows == clean.num_rows == TRAIN_IMAGES + TEST_IMAGES
    assert killed.equals(clean)
    assert read_json(killed_root / "validation_report.json") == read_json(clean_root / "validation_report.json")


def test_cluster_up_that_times_out_fails_in_one_line_and_cleans_up(tmp_path):
    """Workers that never register (a Spark home whose workers only wait): `up` gives up at CLUSTER_TIMEOUT with
    one line, stops the master and the workers, and forgets them."""
    real_home = Path(subprocess.run([PYTHON, "-c", "import pyspark, os; print(os.path.dirname(pyspark.__file__))"],
                                    capture_output=True, text=True, check=True).stdout.strip())
    (tmp_path / "spark" / "bin").mkdir(parents=True)
    spark_class = tmp_path / "spark" / "bin" / "spark-class"
    spark_class.write_text(NEVER_REGISTERING_WORKERS.format(python=PYTHON, spark_home=real_home))
    spark_class.chmod(0o755)
    cluster = Cluster(tmp_path, SPARK_HOME=str(tmp_path / "spark"), CLUSTER_TIMEOUT="3")
    try:
        failed = cluster.script("up")
    finally:
        cluster.script("down")
    assert failed.returncode == 1
    assert failed.stderr == (f"ERROR: only 0 of 2 workers registered with {cluster.master_url} within 3s "
                             f"(logs: {tmp_path}/cluster/logs)\n")
    assert not (tmp_path / "cluster" / "pids.json").exists()
    assert not cluster_processes(cluster)
