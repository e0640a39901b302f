"""Failures from below the pipeline, told in one line a user can act on.

A full disk under a Spark write surfaces as a Py4J trace of several hundred lines; a worker's Python error is
buried in the executor's text; an object store that cannot be reached is an OSError from Arrow's C++ layer; a
Horovod worker that died is "exited with non-zero status". Each of these keeps its real cause somewhere in the
text: this module finds it, so that jobs (pipeline.cli.run_job), scoring and training print that line instead.
Every line passes through the config's redaction first: a URI's password never reaches the terminal.
"""
from __future__ import annotations

import errno
import re
from collections.abc import Iterator
from contextlib import contextmanager

from pipeline.errors import PipelineError, RetryableError
from pipeline.redaction import redacted

# A Python exception's last line as a worker prints it ("ValueError: ...", "tensorflow....NotFoundError: ..."),
# also behind the "[0]<stderr>:" Horovod puts before each line it forwards; never a Java class in a JVM trace.
_PYTHON_ERROR = re.compile(r"^(?:\[[^\]\n]*\]<std(?:err|out)>:)?[ \t]*"
                           r"((?!(?:java|javax|org|scala|py4j|com)\.)(?:[A-Za-z_]\w*\.)*\w*(?:Error|Exception): .*)$",
                           re.MULTILINE)
_NO_SPACE = "No space left on device"
# Where a write was going: Spark's "Task failed while writing rows to file:/out/x.", TensorFlow's "... <file>; No
# space left on device".
_WRITTEN_TO = re.compile(r"writing (?:rows )?to (\S+?)\.?(?:\s|$)")
_TF_NO_SPACE = re.compile(r"(/\S+); No space left on device")
# A rank that failed in a collective operation because another rank died first.
_COLLECTIVE = re.compile(r"Horovod(?:Allreduce|Allgather|Broadcast|Alltoall)|Horovod has been shut down|gloo")
# The ways a store that cannot be reached shows: Arrow's S3 client (curl), Java's and Python's sockets.
_UNREACHABLE = re.compile(r"AWS Error NETWORK_CONNECTION.*|Couldn't (?:resolve host name|connect to server).*|"
                          r"java\.net\.(?:UnknownHostException|ConnectException|NoRouteToHostException): .*|"
                          r"\[Errno (?:-2|-3|111|113)\] .*")


def chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and the exceptions it was raised from or during, outermost first."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def last_python_error(text: str) -> str | None:
    found = _PYTHON_ERROR.findall(text)
    return found[-1].strip() if found else None


def worker_error(text: str) -> str:
    """The last Python error line ('ValueError: ...') in a Spark or Horovod failure's text, else its first line."""
    return redacted(last_python_error(text) or (text.strip().splitlines() or ["unknown error"])[0])


def environment_failure(exc: BaseException) -> RetryableError | None:
    """A full disk or a store that cannot be reached, anywhere in `exc`'s chain, as one line; None otherwise.

    Both may pass (space freed, the network back), so a scheduler may retry them."""
    for link in chain(exc):
        filename = link.filename if isinstance(link, OSError) and link.errno == errno.ENOSPC else None
        found = environment_failure_in(str(link), filename)
        if found is not None:
            return found
    return None


def job_failure(exc: BaseException) -> PipelineError | None:
    """What a job says in one line for a failure from below it (pipeline.cli.run_job): a full disk or a store out
    of reach, or a Spark job that failed on its workers; None for anything else, a bug whose traceback is what a
    developer needs."""
    return environment_failure(exc) or spark_worker_failure(exc)


# A Spark job that failed on its executors: a task's Python error, a lost executor.
_ON_WORKERS = re.compile(r"Job aborted due to stage failure|PythonException")


def spark_worker_failure(exc: BaseException) -> RetryableError | None:
    """A Spark job that failed on its workers (or its batch function in the driver, pipeline.python_batches), as
    '<what the job was doing> failed: <the worker's Python error>' (`what` from the notes of `working_on`).
    Retryable: a lost executor and a model that will not load look the same from the driver, and a scheduler's
    next attempt tells them apart."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    from pipeline.python_batches import PythonBatchError
    for link in chain(exc):
        if (isinstance(link, Py4JJavaError | PySparkException) and _ON_WORKERS.search(str(link))
                or isinstance(link, PythonBatchError)):
            # working_on notes whichever exception passed through it: the one raised, or one it was raised from.
            doing = "; ".join(note for each in chain(exc) for note in getattr(each, "__notes__", ())) or "a Spark job"
            return RetryableError(f"{doing} failed: {worker_error(str(link))}")
    return None


@contextmanager
def working_on(what: str) -> Iterator[None]:
    """Name what the Spark work inside does, for the one line its failure on the workers becomes."""
    try:
        yield
    except Exception as exc:
        exc.add_note(redacted(what))
        raise


def environment_failure_in(text: str, filename: str | None = None) -> RetryableError | None:
    """environment_failure for a failure known only by its text (a worker's output)."""
    if filename is not None or _NO_SPACE in text:
        where = filename or _written_to(text)
        return RetryableError(redacted(f"no space left on device{f' writing {where}' if where else ''}: "
                                       "free space there (or point the output elsewhere) and rerun"))
    unreachable = _UNREACHABLE.search(text)
    if unreachable:
        return RetryableError(redacted(f"a store could not be reached: {_first_line(text, unreachable)}"))
    return None


def horovod_worker_cause(output: str) -> str | None:
    """The cause of a Horovod job's failure in its workers' forwarded output ("[rank]<stderr>:..." lines).

    When one rank dies, the others fail next in a collective (an allreduce that lost its peer), and either may
    print first: so an environment failure anywhere wins, then the error of a rank that did not die in a
    collective, then any rank's."""
    found = environment_failure_in(output)
    if found is not None:
        return str(found)
    per_rank: dict[str, list[str]] = {}
    for line in output.splitlines():
        rank, sep, rest = line.partition("]<stderr>:")
        if sep:
            per_rank.setdefault(rank.lstrip("["), []).append(rest)
    causes = [(_COLLECTIVE.search(text) is not None, last_python_error(text))
              for text in ("\n".join(lines) for lines in per_rank.values())]
    causes = sorted((knock_on, cause) for knock_on, cause in causes if cause)
    return redacted(causes[0][1]) if causes else last_python_error(output)


def _written_to(text: str) -> str | None:
    found = _WRITTEN_TO.search(text) or _TF_NO_SPACE.search(text)
    return found.group(1) if found else None


def _first_line(text: str, match: re.Match) -> str:
    """The line of `text` holding `match`, without a Java class prefix."""
    start = text.rfind("\n", 0, match.start()) + 1
    end = text.find("\n", match.end())
    return text[start:end if end != -1 else len(text)].strip()


class TeeLines:
    """A stream that passes what is written on to `target` and keeps the last `keep` characters, so that a
    failure's real cause can be read back out of a subprocess's forwarded output (Horovod's workers)."""

    def __init__(self, target, keep: int = 64_000) -> None:
        self.target, self.keep, self.text = target, keep, ""

    def write(self, data) -> int:
        text = data.decode(errors="replace") if isinstance(data, bytes) else data
        self.text = (self.text + text)[-self.keep:]
        self.target.write(text)
        return len(data)

    def flush(self) -> None:
        self.target.flush()
