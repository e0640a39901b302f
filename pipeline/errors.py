"""The one exception type a user sees as a one-line message (jobs turn it into a non-zero exit)."""


class PipelineError(Exception):
    """A problem with the input, the config or the environment, explained in one line for the user."""


class GateError(PipelineError):
    """A quality gate failed (e.g. test accuracy below target): outputs are complete, but must not ship.

    `result` is the failed stage's StageResult, so the run manifest still records what was measured."""

    def __init__(self, message: str, result=None) -> None:
        super().__init__(message)
        self.result = result
