"""Background services started and stopped exactly: each in a session (process group) of its own, recorded with
its pid and start time, so that `down` stops what `up` started and nothing else, its children included.

Used by scripts/cluster.py (Spark standalone) and scripts/airflow_service.py (Airflow). Standard library only.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path


def start(name: str, argv: list[str], env: dict[str, str], log_path: Path, cwd: Path) -> dict:
    """Start `argv` in the background, its output appended to `log_path`; the record `is_running` and
    `stop_processes` take."""
    with open(log_path, "ab") as log:
        # A session of its own: Ctrl-C in the calling terminal must not take the service down with it.
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=cwd, start_new_session=True)
    return {"name": name, "pid": proc.pid, "start_ticks": start_ticks(proc.pid), "log": str(log_path)}


def stop_processes(processes: list[dict], grace: float = 15.0) -> None:
    """SIGTERM each recorded process, last started first (a Spark worker then stops its executors, a scheduler its
    task runners); after `grace` seconds SIGKILL what is left of its process group: the group `start` created for
    it, holding only what it started. Return once those groups are gone, so that the ports are free again."""
    ours = [p for p in reversed(processes) if is_running(p)]
    for proc in ours:
        os.kill(proc["pid"], signal.SIGTERM)
    wait_until(lambda: not any(is_running(p) for p in ours), grace)
    groups = {proc["pid"] for proc in ours}
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass  # the whole group has exited
    wait_until(lambda: not group_members(groups), grace)


def wait_until(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)


def group_members(groups: set[int]) -> list[int]:
    """Live (not zombie) processes in any of the process groups `groups`."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it exited while we looked
        if fields[0] != "Z" and int(fields[2]) in groups:
            members.append(int(stat.parent.name))
    return members


def start_ticks(pid: int) -> str | None:
    """The process start time from /proc: with the pid it identifies our process even if the pid is reused."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def is_running(proc: dict) -> bool:
    try:
        os.waitpid(proc["pid"], os.WNOHANG)  # reap it if it is our own exited child
    except ChildProcessError:
        pass
    ticks = start_ticks(proc["pid"])
    if ticks is None or ticks != proc.get("start_ticks"):
        return False
    stat = Path(f"/proc/{proc['pid']}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def write_state(pid_file: Path, state: dict) -> None:
    """`state` as JSON at `pid_file`, replaced in one move: a reader never sees half of it."""
    tmp = pid_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(pid_file)


def last_line(path: str) -> str:
    lines = [line for line in Path(path).read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"no output (see {path})"


def wait_until_ready(processes: list[dict], ready, timeout: float) -> str | None:
    """Poll `ready()` each second until it is true (None) or `timeout` seconds pass; a recorded process that
    exits first ends the wait. Returns why it was not ready: '<name> exited at start: <its log's last line>',
    or 'timeout'."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [p for p in processes if not is_running(p)]
        if dead:
            return f"{dead[0]['name']} exited at start: {last_line(dead[0]['log'])}"
        if ready():
            return None
        time.sleep(1.0)
    return "timeout"


def stop_recorded(pid_file: Path, grace: float = 15.0) -> list[str]:
    """Stop exactly the processes recorded in `pid_file` and their process groups, then forget them; the names of
    those that were running."""
    if not pid_file.exists():
        return []
    processes = json.loads(pid_file.read_text())["processes"]
    stopped = [p["name"] for p in processes if is_running(p)]
    stop_processes(processes, grace=grace)
    pid_file.unlink()
    return stopped
