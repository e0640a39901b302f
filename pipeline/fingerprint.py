"""The one way an output's identity is computed: a short hash of what shapes it.

Data folders are named by these hashes and stages skip when a manifest holds the same one, so the same payload
must always give the same 12 hex characters: sha256 of the payload as JSON with sorted keys.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

LENGTH = 12


def fingerprint_of(payload: Any) -> str:
    """12 hex characters of the sha256 of `payload` (JSON-serialisable) as canonical JSON (keys sorted)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:LENGTH]
