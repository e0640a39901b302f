"""Which model scores a day, resolved once on the driver to a fixed version, so that every row of the day names
the version that scored it and a promotion during the job changes nothing.

- nothing given: the model registry's champion (pipeline.tracking.registry.champion, `models:/<name>@champion`);
- `models:/<name>@<alias>` or `models:/<name>/<version>`: pipeline.tracking.registry.resolve_model_uri;
- a .keras file: its name is the file's stem (or its folder's, for a training output's model.keras) and its
  version `file:<first 12 hex digits of the file's SHA-256>`, so the same bytes always give the same version.

The registry is imported here only, and only when asked for: MLflow's import costs seconds.
"""
from __future__ import annotations

import hashlib
import os

from pipeline import storage
from pipeline.config import PipelineConfig
from pipeline.errors import PipelineError
from pipeline.layout import MODEL_FILE
from pipeline.model_files import KERAS_SUFFIX
from pipeline.model_ref import ResolvedModel, is_registry_uri
from pipeline.paths import absolute

FILE_VERSION_PREFIX = "file:"
FILE_VERSION_DIGITS = 12


def scoring_model(cfg: PipelineConfig, model: str | None) -> ResolvedModel:
    """The model `model` names (default: the registry's champion), with its fixed version."""
    if model is None:
        return _champion(cfg)
    if is_registry_uri(model):
        from pipeline.tracking import registry
        return registry.resolve_model_uri(cfg, model)
    return model_file_version(model)


def _champion(cfg: PipelineConfig) -> ResolvedModel:
    from pipeline.tracking import registry
    found = registry.champion(cfg)
    if found is None:
        raise PipelineError("the model registry has no champion yet: promote a model first, or pass "
                            "--model <file.keras>")
    return found


def model_file_version(path: str) -> ResolvedModel:
    """A .keras file named by its path, versioned by its bytes."""
    path = absolute(path)
    if not path.endswith(KERAS_SUFFIX) or not storage.exists(path) or storage.is_dir(path):
        raise PipelineError(f"--model {path}: expected a .keras file or a models:/<name>@<alias> URI")
    digest = hashlib.sha256(storage.read_bytes(path)).hexdigest()[:FILE_VERSION_DIGITS]
    folder, base = os.path.split(path)
    name = os.path.basename(folder) if base == MODEL_FILE else base.removesuffix(KERAS_SUFFIX)
    return ResolvedModel(name, path, f"{FILE_VERSION_PREFIX}{digest}", path)
