"""Facts about the environment a run happened in: git commit, package versions, machine."""
from __future__ import annotations

import os
import platform
import subprocess

import psutil

from pipeline.config import REPO_ROOT
from pipeline.versions import package_versions


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+uncommitted changes" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment_facts() -> dict:
    return {"git_commit": git_commit(), "versions": package_versions(),
            "machine": {"hostname": platform.node(), "cores": os.cpu_count(),
                        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
                        "platform": platform.platform()}}
