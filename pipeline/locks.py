"""One writer per output folder: a lock file beside the folder, held for the whole stage.

`output_lock(path, stage)` creates `<path>.lock` (beside the folder, not inside it, so it survives the stage's
own removal or publication of the folder) holding JSON {pid, host, stage, since, job, token}, readable by its
owner only, and never the command line (a `--set` value may be a secret). A second writer stops at once with
a one-line RetryableError naming the holder. A lock whose holder ran on this host and no longer exists is stale:
it is taken over with a warning. Only the owner (same token) removes the lock.

Limitations:
- Local paths (and file:// URIs) use an atomic create-exclusive (O_CREAT | O_EXCL). pyarrow's filesystems for
  hdfs:// and s3a:// have no exclusive create, so there the lock is best effort: write the record, read it
  back, compare the token. Two writers that both find no lock and write within the same moment can both win.
- Staleness is judged by pid only on the holder's own host; a lock from another host is never taken over (its
  process cannot be seen from here): the error says which file to delete. Hosts that share a hostname but
  not a pid namespace (containers with the host's name) could see a live holder as gone.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from pyarrow import fs as pafs

from pipeline import storage
from pipeline.errors import RetryableError
from pipeline.paths import absolute

log = logging.getLogger(__name__)

# Output folders this process holds, so `outputs.publishing` knows when it may clean up after killed attempts.
_held: set[str] = set()


def lock_path(path: str) -> str:
    """Where the lock of output folder `path` lives: beside it, so removing or replacing the folder keeps it."""
    return f"{path.rstrip('/')}.lock"


def holds(path: str) -> bool:
    """True when this process holds the lock of `path` or of a folder that contains it."""
    path = absolute(path)
    return any(path == held or path.startswith(f"{held}/") for held in _held)


@contextmanager
def output_lock(path: str, stage: str) -> Iterator[None]:
    """Hold the exclusive lock of output folder `path` for stage `stage` while the block runs."""
    lock_file = lock_path(path)
    record = _owner_record(stage)
    _acquire(lock_file, record)
    _held.add(absolute(path))
    try:
        yield
    finally:
        _held.discard(absolute(path))
        _release(lock_file, record["token"])


def _owner_record(stage: str) -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "stage": stage,
            "since": datetime.now(UTC).isoformat(timespec="seconds"), "job": os.path.basename(sys.argv[0]),
            "token": uuid.uuid4().hex}


def _acquire(lock_file: str, record: dict) -> None:
    """Create the lock file; take over a stale one; otherwise fail naming the holder."""
    # Three rounds: one to meet a stale lock, one to take it over, one more if a holder let go as we looked.
    for _ in range(3):
        if _create(lock_file, record):
            return
        holder = _holder(lock_file)
        if holder is None:
            continue  # released between our attempt and our look: try again
        if not _is_stale(holder):
            raise RetryableError(_busy_message(lock_file, holder))
        log.warning("taking over the stale lock %s of stage '%s' (pid %s on %s since %s: no such process is "
                    "running any more)", lock_file, holder.get("stage"), holder.get("pid"), holder.get("host"),
                    holder.get("since"))
        _take_over(lock_file, holder.get("token"))
    raise RetryableError(_busy_message(lock_file, _holder(lock_file) or {}))


def _create(lock_file: str, record: dict) -> bool:
    """Create `lock_file` holding `record`, unless it exists; True when this call created it."""
    fs, p = storage.filesystem(lock_file)
    fs.create_dir(p.rsplit("/", 1)[0], recursive=True)
    data = (json.dumps(record, sort_keys=True) + "\n").encode()
    if isinstance(fs, pafs.LocalFileSystem):
        return _create_local(p, data)
    return _create_best_effort(fs, p, data, record["token"])


def _create_local(p: str, data: bytes) -> bool:
    try:
        fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def _create_best_effort(fs: pafs.FileSystem, p: str, data: bytes, token: str) -> bool:
    """No exclusive create on these filesystems: write unless present, then read back to see whose record won."""
    if fs.get_file_info(p).type != pafs.FileType.NotFound:
        return False
    with fs.open_output_stream(p) as out:
        out.write(data)
    with fs.open_input_stream(p) as src:
        return _parse(src.read()).get("token") == token


def _holder(lock_file: str) -> dict | None:
    """The lock file's record; None when there is no lock file, {} when it cannot be read."""
    try:
        return _parse(storage.read_bytes(lock_file))
    except FileNotFoundError:
        return None


def _parse(data: bytes) -> dict:
    """The record in a lock file's bytes; {} for an empty or cut-short file (a writer just starting or killed)."""
    try:
        record = json.loads(data.decode())
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def _is_stale(holder: dict) -> bool:
    """A holder from this host whose process is gone; a holder we cannot identify is never stale."""
    pid = holder.get("pid")
    return (holder.get("host") == socket.gethostname() and isinstance(pid, int) and pid > 0
            and not _process_running(pid))


def _process_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """An exited process its parent has not reaped yet still answers kill(0) but holds nothing."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _take_over(lock_file: str, stale_token: str | None) -> None:
    """Remove a stale lock file, making sure it is still the stale one and not a lock just taken by another."""
    fs, p = storage.filesystem(lock_file)
    if not isinstance(fs, pafs.LocalFileSystem):
        storage.remove(lock_file)  # best effort, as creation is there
        return
    # Move it aside first (rename is atomic), then check what we moved: two processes taking over the same stale
    # lock must not both remove it, or the second would remove the first one's fresh lock.
    aside = f"{p}.stale-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(p, aside)
    except FileNotFoundError:
        return  # another process took it over first; the next round meets its lock
    with open(aside, "rb") as moved:
        fresh = _parse(moved.read()).get("token") != stale_token
    if fresh:
        try:
            os.link(aside, p)  # put the other process's lock back (link never replaces an existing file)
        except FileExistsError:
            pass
    os.unlink(aside)


def _release(lock_file: str, token: str) -> None:
    holder = _holder(lock_file)
    if holder and holder.get("token") == token:
        storage.remove(lock_file)
    elif holder is None:
        log.warning("lock %s was removed by someone else while this process held it", lock_file)
    else:
        log.warning("lock %s is no longer this process's (now pid %s on %s): left in place", lock_file,
                    holder.get("pid"), holder.get("host"))


def _busy_message(lock_file: str, holder: dict) -> str:
    output = lock_file.removesuffix(".lock")
    if not holder:
        return (f"{output} is locked by another writer ({lock_file} is empty or unreadable): if no pipeline job is "
                f"running on it, delete {lock_file}")
    return (f"{output} is locked by stage '{holder.get('stage')}' (pid {holder.get('pid')} on {holder.get('host')} "
            f"since {holder.get('since')}): wait for it to finish, or if no such process is running, "
            f"delete {lock_file}")
