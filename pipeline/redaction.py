"""Secrets never written or logged: the values of secret-looking keys and the passwords of URIs are redacted in
everything the pipeline writes or logs (its config, manifests, error lines), and a path carrying a password is
refused outright."""
from __future__ import annotations

import re
from typing import Any

from pipeline.errors import PipelineError

REDACTED = "***redacted***"
# Key names that hold credentials, in any section: Hadoop's fs.s3a.secret.key / access.key / session.token,
# fs.azure.account.key.<account>, fs.s3a.encryption.key, spark.authenticate.secret, spark.ssl.keyPassword, ...
_SECRET_KEY = re.compile(r"secret|passw(or)?d|token|credential|private[ ._-]?key|api[ ._-]?key|access[ ._-]?key"
                         r"|account[ ._-]?key|encryption[ ._-]?key", re.IGNORECASE)
# scheme://user:password@host; a password may hold "/" (AWS secret keys do), so only "@" and blanks end it
_URI_PASSWORD = re.compile(r"(://[^/@:\s]*:)[^@\s]+@")


def refuse_uri_password(path: str, what: str) -> str:
    """`path`, unless it is a URI carrying a password: libraries (Arrow, Hadoop) print a path whole in their
    errors, so a password in one would reach logs and tracebacks. Credentials go in settings, which are redacted."""
    if _URI_PASSWORD.search(path):
        raise PipelineError(f"{what} {redacted(path)} holds a password in the URI: pass credentials as settings "
                            "(e.g. spark.settings.spark.hadoop.fs.s3a.secret.key, redacted everywhere) or the "
                            "store's environment variables, never in a path")
    return path


def refuse_uri_passwords_in(node: Any, key: str = "") -> None:
    """Every string value of the config (paths, the tracking URI, Spark settings) through refuse_uri_password."""
    if isinstance(node, dict):
        for name, value in node.items():
            refuse_uri_passwords_in(value, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list):
        for item in node:
            refuse_uri_passwords_in(item, key)
    elif isinstance(node, str):
        refuse_uri_password(node, f"{key}:")


def looks_secret(key: str) -> bool:
    return _SECRET_KEY.search(key) is not None


def redacted(node: Any) -> Any:
    """`node` (JSON-like) with the values of secret-looking keys and URI passwords replaced by REDACTED."""
    if isinstance(node, dict):
        return {k: REDACTED if looks_secret(str(k)) else redacted(v) for k, v in node.items()}
    if isinstance(node, list):
        return [redacted(item) for item in node]
    if isinstance(node, str):
        return _URI_PASSWORD.sub(rf"\1{REDACTED}@", node)
    return node
