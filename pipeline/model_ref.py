"""The model that scores, one type however it was named. A user names it by a registry URI
(models:/<name>@<alias>, models:/<name>/<version>), a .keras file (or a folder holding model.keras), or, to predict,
a model of the run ('best', model_1); each is resolved once, on the driver, to a ResolvedModel: a fixed version and
a checked local .keras file that every worker loads. pipeline.tracking.registry resolves registry URIs,
pipeline.predict.model_source and pipeline.batch.model the rest.
"""
from __future__ import annotations

from dataclasses import dataclass, field

REGISTRY_PREFIX = "models:/"


def is_registry_uri(model: str) -> bool:
    return model.startswith(REGISTRY_PREFIX)


def registry_uri(name: str, version: str | None = None, alias: str | None = None) -> str:
    """models:/<name>/<version>, or models:/<name>@<alias>."""
    return f"{REGISTRY_PREFIX}{name}@{alias}" if alias is not None else f"{REGISTRY_PREFIX}{name}/{version}"


@dataclass(frozen=True)
class ResolvedModel:
    name: str                    # the registered model's name, the run's model name, or the file's
    model_file: str              # the local, checked .keras file every worker loads
    version: str | None = None   # the registry's version, file:<sha256 prefix> for a file a day is scored with;
                                 # None for a model of the run (predict's model_version column is then null)
    asked: str = ""              # what the user asked for: champion, a models:/ URI, a name or a path
    # (train split, data fingerprint) a registered version was trained on, as training recorded them; None for a
    # file, or a version registered without them. The drift check measures a day against this data.
    training_data: tuple[str, str] | None = None
    run_id: str | None = None    # the MLflow run that logged a registered version
    tags: dict[str, str] = field(default_factory=dict, compare=False, hash=False)  # a registered version's

    @property
    def uri(self) -> str:
        """The registry URI of this fixed version (a registered version only)."""
        return registry_uri(self.name, self.version)
