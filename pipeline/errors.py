"""The exception types a user sees as a one-line message, and the exit codes jobs turn them into.

A scheduler retries a failed task; a retry only helps when the cause may pass. So a job's exit code says which
kind of failure it was:

- EXIT_NOT_RETRYABLE (2, as argparse's usage errors): the command, its config or its input is wrong, or a check
  gave its verdict (drift, a quality gate). Running it again gives the same answer: fail the task at once.
- EXIT_RETRYABLE (1, also what Python gives an uncaught exception): the environment failed (a lost executor, an
  output locked by another run, a Horovod worker that died). The same command may succeed later.
"""

EXIT_RETRYABLE = 1
EXIT_NOT_RETRYABLE = 2


class PipelineError(Exception):
    """A problem with the input, the config or the environment, explained in one line for the user; running the
    same command again would fail the same way."""

    exit_code = EXIT_NOT_RETRYABLE


class RetryableError(PipelineError):
    """A one-line failure that may pass: another run holds the output, or workers were lost mid-job."""

    exit_code = EXIT_RETRYABLE


class GateError(PipelineError):
    """A quality gate failed (e.g. test accuracy below target): outputs are complete, but must not ship.

    `result` is the failed stage's StageResult, so the run manifest still records what was measured."""

    def __init__(self, message: str, result=None) -> None:
        super().__init__(message)
        self.result = result
