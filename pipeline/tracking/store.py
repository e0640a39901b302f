"""Which MLflow store a job talks to, and the one experiment the pipeline logs into.

The store is tracking.uri, else MLFLOW_TRACKING_URI, else a SQLite file under paths.mlflow (nothing to start). For
a store that is not a tracking server, new experiments get an explicit artifact folder: without one MLflow writes
./mlruns in whatever directory a job runs in.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pipeline.config import PipelineConfig
from pipeline.errors import PipelineError
from pipeline.layout import Layout
from pipeline.paths import as_url, is_uri
from pipeline.redaction import redacted

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
REGISTRY_URI_ENV = "MLFLOW_REGISTRY_URI"
SERVER_SCHEMES = ("http://", "https://", "databricks")


@dataclass(frozen=True)
class Store:
    client: Any           # mlflow.MlflowClient bound to `uri` for tracking and registry alike
    uri: str
    experiment_id: str

    @property
    def shown_uri(self) -> str:
        """The URI as logs and records show it: a password in it redacted."""
        return redacted(self.uri)


def tracking_uri(cfg: PipelineConfig, layout: Layout) -> str:
    """tracking.uri, else MLFLOW_TRACKING_URI, else the local SQLite store."""
    configured = cfg.tracking.uri or os.environ.get(TRACKING_URI_ENV, "")
    if configured:
        return configured
    if is_uri(layout.mlflow_root):
        raise PipelineError(f"paths.mlflow '{layout.mlflow_root}' is not a local folder, which the default SQLite "
                            "tracking store needs: set tracking.uri to a tracking server")
    return f"sqlite:///{layout.mlflow_db}"


def missing_local_store(cfg: PipelineConfig) -> str | None:
    """The SQLite file of the local store when that is the store in use and it does not exist yet (nothing was
    logged: asking a client would create it); None otherwise."""
    layout = Layout.from_config(cfg)
    if tracking_uri(cfg, layout) == f"sqlite:///{layout.mlflow_db}" and not os.path.exists(layout.mlflow_db):
        return layout.mlflow_db
    return None


def is_server(uri: str) -> bool:
    return uri.startswith(SERVER_SCHEMES)


def artifact_location(cfg: PipelineConfig, layout: Layout, uri: str) -> str | None:
    """tracking.artifact_location; else the local artifact folder, unless a server chooses."""
    if cfg.tracking.artifact_location:
        return cfg.tracking.artifact_location
    if is_server(uri):
        return None
    return as_url(layout.mlflow_artifacts)


def connect(cfg: PipelineConfig) -> Store:
    """The store and the pipeline's experiment (created on first use). MLflow's process-wide URIs are set too:
    model logging and artifact downloads go through them."""
    import mlflow
    layout = Layout.from_config(cfg)  # the store's paths come from config alone, whichever run is logging
    uri = tracking_uri(cfg, layout)
    if uri == f"sqlite:///{layout.mlflow_db}":
        os.makedirs(layout.mlflow_root, exist_ok=True)
    _set_process_uris(uri)
    with store_errors(uri, "opening"):  # a client checks the store's schema as it is made
        client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        experiment_id = _experiment_id(client, cfg.tracking.experiment, artifact_location(cfg, layout, uri))
    return Store(client, uri, experiment_id)


def _set_process_uris(uri: str) -> None:
    """MLflow's process-wide URIs. Setting them also exports MLFLOW_TRACKING_URI (for subprocesses); the user's value,
    or its absence, is put back, so that the next config in this process (a test, a notebook) finds its own store
    rather than the last one used."""
    import mlflow
    saved = {name: os.environ.get(name) for name in (TRACKING_URI_ENV, REGISTRY_URI_ENV)}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _experiment_id(client, name: str, location: str | None) -> str:
    from mlflow.exceptions import MlflowException
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException:  # another job created it in the meantime
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        raise PipelineError(f"MLflow experiment '{name}' (tracking.experiment) is deleted: restore it "
                            "(mlflow experiments restore) or choose another name")
    return found.experiment_id


@contextmanager
def store_errors(uri: str, doing: str) -> Iterator[None]:
    """MLflow's and the network's errors as one PipelineError line naming the store."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError  # a damaged or locked SQLite file, below MLflow's own errors
    try:
        yield
    except PipelineError:
        raise
    except (MlflowException, SQLAlchemyError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise PipelineError(f"MLflow tracking store {redacted(uri)}: {doing} failed: {first}") from exc
