"""What names a run and a day: the run-id policy (one run folder per profile and config, so that a rerun resumes
and skips; one per retraining date) and the checks on a run id or a date given on the command line, which become
folder names."""
from __future__ import annotations

import re
from datetime import date
from typing import TYPE_CHECKING

from pipeline.errors import PipelineError

if TYPE_CHECKING:
    from pipeline.config import PipelineConfig

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def checked_run_id(run_id: str) -> str:
    """`run_id` when it is a plain folder name; otherwise one line saying so. A run id becomes a folder under
    paths.runs: `../x`, `a/b` or an absolute path would write outside it."""
    if not _RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise PipelineError(f"--run-id {run_id}: expected a plain folder name (letters, digits, '.', '_', '-'; at "
                            "most 128 characters, no '..'), e.g. quick-retry-2")
    return run_id


_DS = re.compile(r"\d{4}-\d{2}-\d{2}")


def checked_ds(ds: str) -> str:
    """`ds` when it is a real date written YYYY-MM-DD; otherwise one line saying so. Every day's paths go through
    here, so a malformed date can never name a folder (ds=../x, ds=2026-2-3 beside ds=2026-02-03)."""
    if not isinstance(ds, str) or not _DS.fullmatch(ds):
        raise PipelineError(f"--ds {ds}: expected a date written YYYY-MM-DD, e.g. 2026-11-24")
    try:
        date.fromisoformat(ds)
    except ValueError as exc:
        raise PipelineError(f"--ds {ds}: not a real date ({exc})") from None
    return ds


def retraining_run_id(cfg: PipelineConfig, ds: str) -> str:
    """One run folder per retraining date and config, apart from the normal runs': a retried task resumes there."""
    return f"retrain-{ds}-{cfg.profile}-{cfg.section_hash('data', 'prepare', 'train', 'retrain')}"


def default_run_id(cfg: PipelineConfig) -> str:
    """Same profile and config, same run folder: a rerun resumes and skips instead of starting over."""
    return f"{cfg.profile}-{cfg.section_hash('data', 'prepare', 'train')}"
