"""The model registry: one registered model for the digit classifier, a version per trained model, and two aliases.

`challenger` marks the best model of the latest evaluation; `champion` is the model in service, which scoring uses
and which only `promote` moves, by the one written rule (`promotion_rule`). Scoring resolves an alias ONCE to a
fixed version and downloads that version's model.keras to a local cache, checked like any model file
(pipeline.model_files): nothing else from the registry is ever deserialised.
"""
from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from pipeline import storage
from pipeline.config import PipelineConfig
from pipeline.errors import PipelineError
from pipeline.layout import MODEL_FILE, Layout, model_file_in
from pipeline.model_files import check_model_file
from pipeline.tracking.store import Store, connect, store_errors

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
URI_PREFIX = "models:/"
_ALIAS_URI = re.compile(r"models:/(?P<name>[^/@]+)@(?P<alias>[\w-]+)")
_VERSION_URI = re.compile(r"models:/(?P<name>[^/@]+)/(?P<version>\d+)")
MODEL_PATH_IN_VERSION = "data/model.keras"  # pipeline.tracking.model_log puts our model.keras there


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    model_file: str                        # local copy of the version's model.keras, already checked
    run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def uri(self) -> str:
        return f"{URI_PREFIX}{self.name}/{self.version}"


def is_registry_uri(model: str) -> bool:
    return model.startswith(URI_PREFIX)


def resolve_model_uri(cfg: PipelineConfig, uri: str) -> RegisteredVersion:
    """models:/<name>@<alias> or models:/<name>/<version> -> that fixed version, its model.keras local and checked.
    The alias is read once: a later move of the alias does not change what the caller scores."""
    if not cfg.tracking.enabled:
        raise PipelineError(f"model '{uri}': registry models need tracking.enabled (it is false)")
    alias, version = _ALIAS_URI.fullmatch(uri), _VERSION_URI.fullmatch(uri)
    if alias is None and version is None:
        raise PipelineError(f"model '{uri}' is not a registry URI: models:/<name>@<alias> or models:/<name>/<version>")
    store = connect(cfg)
    name = (alias or version)["name"]
    with store_errors(store.uri, f"resolving {uri}"):
        found = _by_alias(store, name, alias["alias"]) if alias else _by_version(store, name, version["version"])
    return _fetched(cfg, store, found)


def champion(cfg: PipelineConfig) -> RegisteredVersion | None:
    """The version in service, or None when there is none yet (no registered model, or no champion alias)."""
    if not cfg.tracking.enabled:
        raise PipelineError("the champion lives in the model registry, and tracking.enabled is false: turn tracking "
                            "on, or name a model file")
    store = connect(cfg)
    with store_errors(store.uri, "reading the champion"):
        found = _alias_version(store, cfg.tracking.registered_model, CHAMPION)
    return None if found is None else _fetched(cfg, store, found)


def set_challenger(cfg: PipelineConfig, version: str) -> None:
    """Mark `version` as the best model of the latest evaluation."""
    store = connect(cfg)
    with store_errors(store.uri, "setting the challenger alias"):
        store.client.set_registered_model_alias(cfg.tracking.registered_model, CHALLENGER, version)


def _registered_model_exists(store: Store, name: str) -> bool:
    return bool(store.client.search_registered_models(f"name = '{name}'"))


def _alias_version(store: Store, name: str, alias: str):
    """The ModelVersion `alias` points to, or None."""
    from mlflow.exceptions import MlflowException
    if not _registered_model_exists(store, name):
        return None
    try:
        return store.client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _by_alias(store: Store, name: str, alias: str):
    if not _registered_model_exists(store, name):
        raise PipelineError(f"no registered model '{name}' in MLflow store {store.shown_uri}")
    found = _alias_version(store, name, alias)
    if found is None:
        aliases = sorted(store.client.get_registered_model(name).aliases)
        raise PipelineError(f"registered model '{name}' has no alias '{alias}' (aliases: "
                            f"{', '.join(aliases) or 'none'}) in MLflow store {store.shown_uri}")
    return found


def _by_version(store: Store, name: str, version: str):
    if not _registered_model_exists(store, name):
        raise PipelineError(f"no registered model '{name}' in MLflow store {store.shown_uri}")
    from mlflow.exceptions import MlflowException
    try:
        return store.client.get_model_version(name, version)
    except MlflowException:
        raise PipelineError(f"registered model '{name}' has no version {version} in MLflow store "
                            f"{store.shown_uri}") from None


def _fetched(cfg: PipelineConfig, store: Store, found) -> RegisteredVersion:
    """The version with its model.keras downloaded once into the cache (again if the cached bytes are not the
    version's) and checked."""
    cache = Layout.from_config(cfg).registry_cache(found.name, str(found.version))
    tags = dict(found.tags or {})
    model_file = model_file_in(cache)
    if not _cached_matches(model_file, tags.get("model_sha256")):
        with store_errors(store.uri, f"downloading {found.name} version {found.version}"):
            _download(found.name, str(found.version), cache)
    check_model_file(model_file)
    return RegisteredVersion(found.name, str(found.version), model_file, found.run_id, tags)


def _cached_matches(model_file: str, sha256: str | None) -> bool:
    import hashlib
    if not storage.exists(model_file):
        return False
    return sha256 is None or hashlib.sha256(storage.read_bytes(model_file)).hexdigest() == sha256


def _download(name: str, version: str, cache: str) -> None:
    import os
    import tempfile

    import mlflow
    with tempfile.TemporaryDirectory(prefix="registry-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"{URI_PREFIX}{name}/{version}", dst_path=tmp)
        keras_file = os.path.join(local, MODEL_PATH_IN_VERSION)
        if not os.path.isfile(keras_file):
            raise PipelineError(f"registered model '{name}' version {version} holds no {MODEL_PATH_IN_VERSION}: "
                                f"only versions logged by this pipeline (a checked {MODEL_FILE}) are loaded")
        with open(keras_file, "rb") as src, storage.publishing(cache) as target:
            storage.write_bytes(model_file_in(target), src.read())


@dataclass(frozen=True)
class PromotionDecision:
    promoted: bool
    challenger_version: str
    challenger_accuracy: float
    champion_version: str | None
    champion_accuracy: float | None
    target: float
    margin: float
    reason: str                               # one line
    registered_model: str = ""
    decided_at: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def promotion_rule(challenger_accuracy: float, champion_accuracy: float | None, target: float,
                   margin: float) -> tuple[bool, str]:
    """The one written rule. The challenger is promoted when its test accuracy is at least the target AND, if there
    is a champion, higher than the champion's on the same test set by at least the margin (strictly higher when the
    margin is 0). The first model ever is promoted when it meets the target. Returns (promoted, one-line reason)."""
    challenger = f"challenger test accuracy {challenger_accuracy:.4f}"
    if not challenger_accuracy >= target:
        return False, f"{challenger} is below the target {target:.4f}"
    if champion_accuracy is None:
        return True, f"{challenger} meets the target {target:.4f} and there is no champion yet"
    gain = challenger_accuracy - champion_accuracy
    versus = f"the champion's {champion_accuracy:.4f} ({gain:+.4f}; margin {margin:.4f})"
    if gain > 0 and gain >= margin - 1e-12:  # a tolerance for accuracies that differ in the last bits only
        return True, f"{challenger} beats {versus}"
    return False, f"{challenger} does not beat {versus}"


def promote(cfg: PipelineConfig, challenger: RegisteredVersion, challenger_accuracy: float,
            champion_accuracy: float | None) -> PromotionDecision:
    """Apply the rule to `challenger` against the current champion (`champion_accuracy`: its accuracy on the same
    test set). Moves the champion alias only when promoted; records the decision as tags on the challenger's version
    and run, and on a replaced champion's version (nothing is demoted silently)."""
    store = connect(cfg)
    name, target, margin = challenger.name, cfg.evaluate.target_accuracy, cfg.tracking.promotion_margin
    with store_errors(store.uri, "deciding the promotion"):
        current = _alias_version(store, name, CHAMPION)
        current_version = None if current is None else str(current.version)
        if current_version == challenger.version:
            promoted, reason = False, f"version {challenger.version} is already the champion"
        elif current_version is not None and champion_accuracy is None:
            promoted, reason = False, (f"champion version {current_version} was not scored on this test set: "
                                       "kept (never replaced without a comparison)")
        else:
            promoted, reason = promotion_rule(challenger_accuracy, champion_accuracy, target, margin)
        decision = PromotionDecision(promoted, challenger.version, challenger_accuracy, current_version,
                                     champion_accuracy, target, margin, reason, name,
                                     datetime.now(UTC).isoformat(timespec="seconds"))
        if promoted:
            store.client.set_registered_model_alias(name, CHAMPION, challenger.version)
        _record(store, decision, challenger.run_id)
    log.info("%s version %s %s: %s", name, challenger.version,
             "promoted to champion" if promoted else "not promoted", reason)
    if promoted and current_version is not None:
        log.warning("%s version %s is no longer the champion: replaced by version %s", name, current_version,
                    challenger.version)
    return decision


def _record(store: Store, decision: PromotionDecision, run_id: str | None) -> None:
    outcome = "promoted" if decision.promoted else "kept"
    tags = {"promotion": outcome, "promotion_reason": decision.reason[:5000],
            "promotion_champion_version": decision.champion_version or "none", "promotion_at": decision.decided_at}
    for key, value in tags.items():
        store.client.set_model_version_tag(decision.registered_model, decision.challenger_version, key, value)
    if decision.promoted and decision.champion_version is not None:
        store.client.set_model_version_tag(decision.registered_model, decision.champion_version, "replaced_by",
                                           f"version {decision.challenger_version} at {decision.decided_at}: "
                                           f"{decision.reason}"[:5000])
    if run_id is not None:
        for key, value in tags.items():
            store.client.set_tag(run_id, key, value)
        store.client.log_dict(run_id, decision.to_dict(), f"promotion/{decision.decided_at.replace(':', '')}.json")
