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
from dataclasses import dataclass

from pipeline import storage
from pipeline.config import PipelineConfig
from pipeline.errors import PipelineError
from pipeline.layout import MODEL_FILE
from pipeline.model_files import KERAS_SUFFIX
from pipeline.paths import absolute

REGISTRY_SCHEME = "models:/"
FILE_VERSION_PREFIX = "file:"
FILE_VERSION_DIGITS = 12


@dataclass(frozen=True)
class ScoringModel:
    name: str          # the registered model's name, or the file's
    version: str       # the registry's version, or file:<sha256 prefix>
    model_file: str    # a local .keras file (the registry copies its artifact to one)
    asked: str         # what the user asked for: champion, a models:/ URI or the path
    # (train split, data fingerprint) a registered version was trained on, as training recorded them; None for a
    # file, or a version registered without them. The drift check measures the day against this data.
    training_data: tuple[str, str] | None = None


def scoring_model(cfg: PipelineConfig, model: str | None) -> ScoringModel:
    """The model `model` names (default: the registry's champion), with its fixed version."""
    if model is None:
        return _champion(cfg)
    if model.startswith(REGISTRY_SCHEME):
        from pipeline.tracking import registry
        found = registry.resolve_model_uri(cfg, model)
        return ScoringModel(found.name, str(found.version), found.model_file, model,
                            registry.training_data_in(found.tags))
    return model_file_version(model)


def _champion(cfg: PipelineConfig) -> ScoringModel:
    from pipeline.tracking import registry
    found = registry.champion(cfg)
    if found is None:
        raise PipelineError("the model registry has no champion yet: promote a model first, or pass "
                            "--model <file.keras>")
    return ScoringModel(found.name, str(found.version), found.model_file, f"{REGISTRY_SCHEME}{found.name}@champion",
                        registry.training_data_in(found.tags))


def model_file_version(path: str) -> ScoringModel:
    """A .keras file named by its path, versioned by its bytes."""
    path = absolute(path)
    if not path.endswith(KERAS_SUFFIX) or not storage.exists(path) or storage.is_dir(path):
        raise PipelineError(f"--model {path}: expected a .keras file or a models:/<name>@<alias> URI")
    digest = hashlib.sha256(storage.read_bytes(path)).hexdigest()[:FILE_VERSION_DIGITS]
    folder, base = os.path.split(path)
    name = os.path.basename(folder) if base == MODEL_FILE else base.removesuffix(KERAS_SUFFIX)
    return ScoringModel(name, f"{FILE_VERSION_PREFIX}{digest}", path, path)
