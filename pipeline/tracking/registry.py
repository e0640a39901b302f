"""The model registry: one registered model for the digit classifier, a version per trained model, and two aliases.

`challenger` marks the best model of the latest evaluation; `champion` is the model in service, which scoring uses
and which only `promote` moves, by the one written rule (pipeline.tracking.decision). Scoring resolves an alias
ONCE to a fixed version and downloads that version's model.keras to a local cache, checked like any model file
(pipeline.model_files): nothing else from the registry is ever deserialised.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from pipeline import outputs, storage
from pipeline.config import PipelineConfig
from pipeline.errors import PipelineError
from pipeline.layout import MODEL_FILE, Layout, model_file_in
from pipeline.model_files import check_model_file
from pipeline.model_ref import REGISTRY_PREFIX, ResolvedModel, registry_uri
from pipeline.tracking.decision import Evidence, decide, decision_key
from pipeline.tracking.store import Store, connect, missing_local_store, store_errors

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
_ALIAS_URI = re.compile(rf"{REGISTRY_PREFIX}(?P<name>[^/@]+)@(?P<alias>[\w-]+)")
_VERSION_URI = re.compile(rf"{REGISTRY_PREFIX}(?P<name>[^/@]+)/(?P<version>\d+)")
MODEL_PATH_IN_VERSION = "data/model.keras"  # pipeline.tracking.model_log puts our model.keras there
TRAINING_DATA_TAG = "training_data"         # a version's train split, beside its data_fingerprint tag


def resolve_model_uri(cfg: PipelineConfig, uri: str) -> ResolvedModel:
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
    return _fetched(cfg, store, found, uri)


def champion(cfg: PipelineConfig) -> ResolvedModel | None:
    """The version in service, or None when there is none yet (no registered model, or no champion alias)."""
    if not cfg.tracking.enabled:
        raise PipelineError("the champion lives in the model registry, and tracking.enabled is false: turn tracking "
                            "on, or name a model file")
    store = connect(cfg)
    with store_errors(store.uri, "reading the champion"):
        found = _alias_version(store, cfg.tracking.registered_model, CHAMPION)
    return None if found is None else _fetched(cfg, store, found, registry_uri(found.name, alias=CHAMPION))


def champion_version(cfg: PipelineConfig) -> str | None:
    """The champion's version number, read without fetching its model; None when there is none yet. A local store
    that does not exist yet has none, and is not created by asking."""
    if not cfg.tracking.enabled:
        return None
    if missing_local_store(cfg):
        return None
    store = connect(cfg)
    with store_errors(store.uri, "reading the champion"):
        found = _alias_version(store, cfg.tracking.registered_model, CHAMPION)
    return None if found is None else str(found.version)


def training_data(cfg: PipelineConfig, name: str, version: str) -> tuple[str, str] | None:
    """(train split, its data fingerprint) that registered model `name` version `version` was trained on, as
    training recorded them on the version; None for a version registered without them."""
    store = connect(cfg)
    with store_errors(store.uri, f"reading the training data of {name} version {version}"):
        return training_data_in(_by_version(store, name, version).tags or {})


def training_data_in(tags: Mapping[str, str]) -> tuple[str, str] | None:
    """(train split, data fingerprint) recorded in a version's tags, or None."""
    if not tags.get(TRAINING_DATA_TAG) or tags.get("data_fingerprint") in (None, "None"):
        return None
    return tags[TRAINING_DATA_TAG], tags["data_fingerprint"]


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


def _fetched(cfg: PipelineConfig, store: Store, found, asked: str) -> ResolvedModel:
    """The version with its model.keras downloaded once into the cache (again if the cached bytes are not the
    version's) and checked."""
    cache = Layout.from_config(cfg).registry_cache(found.name, str(found.version))
    tags = dict(found.tags or {})
    model_file = model_file_in(cache)
    if not _cached_matches(model_file, tags.get("model_sha256")):
        with store_errors(store.uri, f"downloading {found.name} version {found.version}"):
            _download(found.name, str(found.version), cache)
    check_model_file(model_file)
    return ResolvedModel(found.name, model_file, str(found.version), asked, training_data_in(tags), found.run_id,
                         tags)


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
        local = mlflow.artifacts.download_artifacts(artifact_uri=registry_uri(name, version), dst_path=tmp)
        keras_file = os.path.join(local, MODEL_PATH_IN_VERSION)
        if not os.path.isfile(keras_file):
            raise PipelineError(f"registered model '{name}' version {version} holds no {MODEL_PATH_IN_VERSION}: "
                                f"only versions logged by this pipeline (a checked {MODEL_FILE}) are loaded")
        with open(keras_file, "rb") as src, outputs.publishing(cache) as target:
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
    key: str = ""                             # decision_key: what this decision was taken once for
    conditions: list = field(default_factory=list)      # the rule's conditions, each with its verdict
    evidence: dict = field(default_factory=dict)        # {"challenger": Evidence, "champion": Evidence | None}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PromotionDecision:
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


def promote(cfg: PipelineConfig, challenger: ResolvedModel, evidence: Evidence, champion: Evidence | None,
            context: str) -> PromotionDecision:
    """Decide once whether `challenger` replaces the champion, by the rule (pipeline.tracking.decision) on this
    evidence (`champion`: the version in service when the evidence was gathered, scored on the same sets), and
    apply it.

    Crash-consistent and idempotent: the whole decision is written to the challenger's version (and run) BEFORE
    the champion alias moves, under decision_key(context, version). A rerun (a retried task, a rerun after a kill)
    finds that decision, completes it if the alias did not move yet, and never decides again: it cannot promote
    twice or flip a decision, and the registry never has a champion without its record."""
    store = connect(cfg)
    key = decision_key(context, challenger.version)
    with store_errors(store.uri, "deciding the promotion"):
        decision = _recorded_decision(store, challenger, key)
        if decision is None:
            current = _alias_version(store, challenger.name, CHAMPION)
            decision = _decided(cfg, challenger, evidence, champion, None if current is None else str(current.version),
                                key)
            _record(store, decision, challenger.run_id)     # the intent, before anything moves
        else:
            log.info("%s version %s: decided before (%s), not again", challenger.name, challenger.version,
                     decision.decided_at)
        if decision.promoted:
            _complete_promotion(store, decision)
    log.info("%s version %s %s: %s", challenger.name, challenger.version,
             "promoted to champion" if decision.promoted else "not promoted", decision.reason)
    return decision


def _decided(cfg: PipelineConfig, challenger: ResolvedModel, evidence: Evidence, champion: Evidence | None,
             current_version: str | None, key: str) -> PromotionDecision:
    """The decision on this evidence, against the champion in service now (`current_version`)."""
    target, margin = cfg.evaluate.target_accuracy, cfg.tracking.promotion_margin
    scored_version = None if champion is None else champion.version
    verdict = None
    if current_version == challenger.version:
        promoted, reason = False, f"version {challenger.version} is already the champion"
    elif current_version is not None and scored_version is None:
        promoted, reason = False, (f"champion version {current_version} was not scored on this test set: "
                                   "kept (never replaced without a comparison)")
    elif scored_version != current_version:
        promoted, reason = False, (f"the champion moved from version {scored_version} to {current_version} while the "
                                   f"evidence was gathered: kept (a rerun judges against version {current_version})")
    else:
        verdict = decide(evidence, champion, target, margin)
        promoted, reason = verdict.promoted, verdict.reason
    return PromotionDecision(
        promoted, challenger.version, evidence.test.accuracy, current_version,
        None if champion is None else champion.test.accuracy, target, margin, reason, challenger.name,
        datetime.now(UTC).isoformat(timespec="seconds"), key,
        [] if verdict is None else [asdict(c) for c in verdict.conditions],
        {"challenger": asdict(evidence), "champion": None if champion is None else asdict(champion)})


DECISION_TAG, KEY_TAG = "promotion_decision", "promotion_key"


def _recorded_decision(store: Store, challenger: ResolvedModel, key: str) -> PromotionDecision | None:
    """The decision recorded on the challenger's version under `key`, if one was taken."""
    import json
    found = store.client.get_model_version(challenger.name, challenger.version)
    tags = dict(found.tags or {})
    if tags.get(KEY_TAG) != key or DECISION_TAG not in tags:
        return None
    return PromotionDecision.from_dict(json.loads(tags[DECISION_TAG]))


def _record(store: Store, decision: PromotionDecision, run_id: str | None) -> None:
    """The decision as tags on the challenger's version (the whole of it, which a rerun reads back) and run."""
    import json
    outcome = "promoted" if decision.promoted else "kept"
    tags = {"promotion": outcome, "promotion_reason": decision.reason[:5000],
            "promotion_champion_version": decision.champion_version or "none", "promotion_at": decision.decided_at}
    name, version = decision.registered_model, decision.challenger_version
    for key, value in tags.items():
        store.client.set_model_version_tag(name, version, key, value)
    store.client.set_model_version_tag(name, version, DECISION_TAG, json.dumps(decision.to_dict()))
    store.client.set_model_version_tag(name, version, KEY_TAG, decision.key)  # last: the decision is whole
    if run_id is not None:
        for key, value in tags.items():
            store.client.set_tag(run_id, key, value)
        store.client.log_dict(run_id, decision.to_dict(), f"promotion/{decision.decided_at.replace(':', '')}.json")


def _complete_promotion(store: Store, decision: PromotionDecision) -> None:
    """Move the champion alias to the promoted version, unless it is there already, and say on the replaced version
    what replaced it. Refused when the alias moved elsewhere since the decision: nothing is replaced unseen."""
    name, version, replaced = decision.registered_model, decision.challenger_version, decision.champion_version
    current = _alias_version(store, name, CHAMPION)
    current_version = None if current is None else str(current.version)
    if current_version not in (replaced, version):
        log.warning("%s version %s was promoted at %s, but the champion is now version %s: left as it is", name,
                    version, decision.decided_at, current_version)
        return
    if current_version != version:
        store.client.set_registered_model_alias(name, CHAMPION, version)
    if replaced is not None:
        store.client.set_model_version_tag(name, replaced, "replaced_by", f"version {version} at "
                                           f"{decision.decided_at}: {decision.reason}"[:5000])
        if current_version != version:
            log.warning("%s version %s is no longer the champion: replaced by version %s", name, replaced, version)
