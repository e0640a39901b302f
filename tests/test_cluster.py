"""The pipeline on a real Spark standalone cluster (a master and two 1-core workers on 127.0.0.1), submitted with
spark-submit exactly as the README says, with the cluster always brought down, also when a test fails.

Which executor ran each Horovod rank is read from the driver's Spark event log: the tasks of every
`horovod.spark.run` job group, with their executor ids.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.config import REPO_ROOT, load_config

pytestmark = pytest.mark.slow

PYTHON = str(REPO_ROOT / ".venv" / "bin" / "python")
SPARK_SUBMIT = str(REPO_ROOT / ".venv" / "bin" / "spark-submit")
CLUSTER_SCRIPT = str(REPO_ROOT / "scripts" / "cluster.py")
REPORT_SECTIONS = 9
QUICK = load_config(REPO_ROOT / "conf" / "cluster-local.yaml", "quick")


def free_ports(count: int) -> list[int]:
    """`count` ports free right now; the last two consecutive (worker UI ports are base, base + 1)."""
    for _ in range(50):
        ports = []
        for _ in range(count - 1):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                ports.append(sock.getsockname()[1])
        base = ports[-1]
        if _is_free(base + 1) and base + 1 not in ports:
            return [*ports, base + 1]
    raise RuntimeError("no free consecutive ports found")


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


class Cluster:
    """A cluster started by scripts/cluster.py on free ports, its state under `root`."""

    def __init__(self, root: Path):
        master, master_ui, worker_ui, _ = free_ports(4)
        self.root = root
        self.master_url = f"spark://127.0.0.1:{master}"
        self.env = {**os.environ, "CLUSTER_DIR": str(root / "cluster"), "CLUSTER_MASTER_PORT": str(master),
                    "CLUSTER_MASTER_UI_PORT": str(master_ui), "CLUSTER_WORKER_UI_PORT": str(worker_ui),
                    "CLUSTER_TIMEOUT": "120", "SPARK_LOCAL_IP": "127.0.0.1", "PYSPARK_PYTHON": PYTHON}

    def script(self, command: str) -> subprocess.CompletedProcess:
        return subprocess.run([PYTHON, CLUSTER_SCRIPT, command], env=self.env, capture_output=True, text=True,
                              timeout=180)

    @property
    def processes(self) -> dict[str, int]:
        state = json.loads((self.root / "cluster" / "pids.json").read_text())
        return {p["name"]: p["pid"] for p in state["processes"]}

    def submit(self, job: str, *args: str, log_name: str, timeout: float = 900) -> subprocess.CompletedProcess:
        """spark-submit `job` with the shipped package and wait for it; its output is kept in `root/log_name`."""
        proc = self.start(job, *args, log_name=log_name)
        return finish(proc, timeout)

    def start(self, job: str, *args: str, log_name: str) -> subprocess.Popen:
        """spark-submit `job` in a session of its own (so a timeout can stop the driver's whole process tree)."""
        conf = ["--conf=spark.eventLog.enabled=true", f"--conf=spark.eventLog.dir=file://{self.events}"]
        argv = [SPARK_SUBMIT, "--master", self.master_url, "--py-files", str(REPO_ROOT / "dist" / "pipeline.zip"),
                "--driver-memory", "2g", *conf, str(REPO_ROOT / job), *args]
        log = open(self.root / log_name, "w")
        proc = subprocess.Popen(argv, env=self.env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        proc.log_path, proc.log_file = self.root / log_name, log
        return proc

    def pipeline_args(self, out: Path) -> list[str]:
        """The quick profile on this cluster, every output under `out`."""
        return ["--conf", "conf/cluster-local.yaml", "--profile", "quick", "--set", f"spark.master={self.master_url}",
                "--set", f"paths.data={out / 'data'}", "--set", f"paths.runs={out / 'runs'}",
                "--set", f"paths.store={out / 'store'}"]

    @property
    def events(self) -> Path:
        path = self.root / "events"
        path.mkdir(exist_ok=True)
        return path


@pytest.fixture(scope="module")
def dist():
    subprocess.run(["make", "-s", "dist"], cwd=REPO_ROOT, check=True, capture_output=True, timeout=120)
    return REPO_ROOT / "dist" / "pipeline.zip"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, dist):
    """Up before the module's tests, down after them whatever happened (even when `up` itself failed half-way)."""
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        started = cluster.script("up")
        assert started.returncode == 0, started.stderr
        yield cluster
    finally:
        cluster.script("down")


def finish(proc: subprocess.Popen, timeout: float) -> subprocess.Popen:
    """Wait for a submitted job; past `timeout` kill its whole process group and fail the test."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"{proc.log_path.name}: no result within {timeout:.0f}s (hung?)\n{tail(read_log(proc))}")
    finally:
        proc.log_file.close()
    proc.log = read_log(proc)
    return proc


def read_log(proc: subprocess.Popen) -> str:
    return proc.log_path.read_text(errors="replace")


def tail(text: str, lines: int = 25) -> str:
    """The last lines of a spark-submit log without Spark's INFO chatter: what an assertion message should show."""
    return "\n".join([line for line in text.splitlines() if " INFO " not in line][-lines:])


def horovod_executors(event_dir: Path) -> list[set[str]]:
    """For each horovod.spark.run job in the event logs, the executor ids of its finished tasks."""
    groups: dict[int, str] = {}
    stage_job: dict[int, int] = {}
    executors: dict[str, set[str]] = {}
    for path in sorted(event_dir.iterdir()):
        for line in path.read_text(errors="replace").splitlines():
            event = json.loads(line)
            kind = event.get("Event")
            if kind == "SparkListenerJobStart":
                group = (event.get("Properties") or {}).get("spark.jobGroup.id", "")
                if group.startswith("horovod.spark.run"):
                    groups[event["Job ID"]] = f"{path.name}/{group}"
                    stage_job.update({s: event["Job ID"] for s in event["Stage IDs"]})
            elif kind == "SparkListenerTaskEnd" and event["Stage ID"] in stage_job:
                group = groups[stage_job[event["Stage ID"]]]
                executors.setdefault(group, set()).add(event["Task Info"]["Executor ID"])
    return list(executors.values())


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
    # The quick profile keeps a stratified 10% of every split of MNIST's 54,000 / 6,000 / 10,000 images.
    assert curated["counts"] == {"train": 5400, "validation": 600, "test": 1000}
    for split in ("train", "validation", "test"):
        assert sum(curated["label_counts"][split].values()) == curated["counts"][split]
    run = out / "runs" / "cluster-quick"
    for model in ("model_1", "model_2", "model_3"):
        history = json.loads((run / "train" / model / "history.json").read_text())
        assert history["complete"] and history["num_workers"] == 2
        assert history["epochs_completed"] == QUICK.train.models[model].epochs
        assert (run / "train" / model / "model.keras").stat().st_size > 10_000
    best = json.loads((run / "evaluate" / "best_model.json").read_text())
    assert best["model"] in ("model_1", "model_2", "model_3") and 0.5 < best["test_accuracy"] <= 1.0
    report = (run / "report.md").read_text()
    assert len(re.findall(r"^## ", report, flags=re.M)) == REPORT_SECTIONS


def test_every_horovod_run_spans_both_executors(cluster, quick_run):
    runs = horovod_executors(cluster.events)
    assert len(runs) == 3  # one horovod.spark.run per model
    assert all(len(executors) == 2 for executors in runs), runs


def test_horovod_rank_lost_fails_fast_then_rerun_resumes_from_checkpoint(cluster, quick_run):
    """Kill the executor of one rank after the first checkpoint: one clear error line, no hang; the rerun
    resumes at the checkpointed epoch. The worker stays up, so the master gives the app a new executor."""
    out, _ = quick_run
    args = [*cluster.pipeline_args(out), "--model", "model_1", "--set", "train.models.model_1.epochs=3",
            "--run-id", "cluster-resume"]
    model_dir = out / "runs" / "cluster-resume" / "train" / "model_1"
    proc = cluster.start("jobs/train.py", *args, log_name="train-killed.log")
    state = wait_for(lambda: read_json(model_dir / "checkpoint" / "state.json"), proc, timeout=420)
    os.kill(executor_pid(cluster, "worker-2"), signal.SIGKILL)
    killed_at = time.monotonic()
    finish(proc, timeout=300)
    assert proc.returncode == 1, tail(proc.log)
    assert time.monotonic() - killed_at < 300
    error = [line for line in proc.log.splitlines() if line.startswith("ERROR [train]")]
    assert error and error[0].startswith("ERROR [train]: training model_1 failed on the Horovod workers"), \
        tail(proc.log)
    rerun = cluster.submit("jobs/train.py", *args, log_name="train-resumed.log")
    assert rerun.returncode == 0, tail(rerun.log)
    history = json.loads((model_dir / "history.json").read_text())
    assert history["resumed_from_epoch"] >= state["epoch"] >= 1
    assert history["complete"] and history["epochs_completed"] == 3
    assert [e["epoch"] for e in history["epochs"]] == [1, 2, 3]


def test_worker_lost_mid_ingest_retries_on_the_other_and_output_equals_clean_run(cluster, quick_run):
    """Kill worker-2 (its recorded pid) while ingest parses the 70,000 bundled images: the lost tasks rerun on
    worker-1 and the raw table equals the one of the undisturbed quick run, row for row."""
    import pyarrow.parquet as pq
    out, _ = quick_run
    kill_out = cluster.root / "out-killed"
    proc = cluster.start("jobs/ingest.py", *cluster.pipeline_args(kill_out), log_name="ingest-killed.log")
    wait_for(lambda: "records in" in read_log(proc) and executor_pid(cluster, "worker-2"), proc, timeout=300)
    time.sleep(5)  # the parse tasks are running on both executors
    os.kill(cluster.processes["worker-2"], signal.SIGKILL)
    finish(proc, timeout=420)
    assert proc.returncode == 0, tail(proc.log)
    assert "ExecutorLostFailure" in proc.log or "Lost executor" in proc.log, "worker-2 died after the stage ended"
    clean_root, = (out / "data").glob("ingest-*")
    killed_root = kill_out / "data" / clean_root.name
    clean, killed = (pq.read_table(root / "raw").sort_by("record_id") for root in (clean_root, killed_root))
    assert killed.num_rows == clean.num_rows == 70_000
    assert killed.equals(clean)
    assert read_json(killed_root / "validation_report.json") == read_json(clean_root / "validation_report.json")


def wait_for(condition, proc: subprocess.Popen, timeout: float, every: float = 1.0):
    """Poll `condition` until it returns something truthy; fail if the job ends or `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"job ended (code {proc.returncode}) before the moment to inject the failure\n"
                        f"{tail(read_log(proc))}")
        time.sleep(every)
    finish(proc, timeout=0.1)


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def executor_pid(cluster: Cluster, worker: str) -> int | None:
    """The pid of the live executor JVM that `worker` launched (its working directory is under the worker's)."""
    work_dir = str(cluster.root / "cluster" / "work" / worker) + "/"
    for pid in processes_mentioning("CoarseGrainedExecutorBackend"):
        try:
            if os.readlink(f"/proc/{pid}/cwd").startswith(work_dir):
                return pid
        except OSError:
            continue
    return None


def test_cluster_up_that_times_out_fails_in_one_line_and_cleans_up(tmp_path, dist):
    cluster = Cluster(tmp_path)
    cluster.env["CLUSTER_TIMEOUT"] = "1"
    try:
        failed = cluster.script("up")
    finally:
        cluster.script("down")
    assert failed.returncode == 1
    assert re.fullmatch(rf"ERROR: only [01] of 2 workers registered with {cluster.master_url} within 1s "
                        rf"\(logs: {tmp_path}/cluster/logs\)\n", failed.stderr)
    assert not (tmp_path / "cluster" / "pids.json").exists()
    assert not processes_mentioning(str(tmp_path / "cluster"))


def test_cluster_down_stops_exactly_the_recorded_processes(cluster, quick_run):
    """Last in the module: the module fixture's own `down` then finds nothing left to stop."""
    pids = cluster.processes
    alive = [name for name, pid in pids.items() if is_alive(pid)]  # worker-2 was killed above
    stopped = cluster.script("down")
    assert stopped.stdout.strip() == f"cluster down: stopped {', '.join(alive)}" and "master" in alive
    assert not any(is_alive(pid) for pid in pids.values())
    assert not processes_mentioning(str(cluster.root / "cluster"))  # executors went with their workers
    assert cluster.script("down").stdout.strip() == "cluster down: nothing was running"


def is_alive(pid: int) -> bool:
    """Running, not a zombie: a killed worker whose parent has gone stays in /proc until init reaps it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def processes_mentioning(text: str) -> list[int]:
    """Pids of live processes whose command line contains `text`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found
