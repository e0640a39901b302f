"""Loading the config: a YAML file, then its profile's overlay, then `--set section.key=value` overrides; keys that
moved read under their old name; every value checked against its section's schema, once, here at the edge.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from pipeline.config.checkout import DEFAULT_CONF, DEFAULT_PROFILE, PROFILES_FOLDER, REPO_ROOT
from pipeline.config.fields import Bounds, Choices, CountOrFraction, PlainName
from pipeline.config.schema import PipelineConfig
from pipeline.errors import PipelineError
from pipeline.paths import is_uri, joined_to
from pipeline.redaction import refuse_uri_passwords_in

log = logging.getLogger("pipeline.config")


def default_paths_root(conf_file: str | Path | None) -> str:
    """The folder above the config file's folder (conf/local.yaml -> the checkout); the checkout without a file."""
    if conf_file is None:
        return str(REPO_ROOT)
    return os.path.dirname(os.path.dirname(os.path.abspath(conf_file)))


def load_config(conf_file: str | Path | None = None, profile: str | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> PipelineConfig:
    """Load `conf_file`, overlay `profiles/<profile>.yaml` beside it (the checkout's conf/profiles without a file),
    then apply `section.key=value` overrides; `paths.root` comes back as the base it resolves to."""
    raw: dict[str, Any] = {}
    if conf_file is not None:
        raw = _read_yaml(Path(conf_file))
    profiles = profiles_dir(conf_file)
    profile = profile or raw.get("profile") or DEFAULT_PROFILE
    overlay = profile_file(profile, profiles)
    if overlay is not None:
        raw = _deep_merge(raw, _read_yaml(overlay))
    raw["profile"] = profile
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PipelineError(f"--set expects section.key=value, got '{item}'")
        _set_dotted(raw, key.strip(), _parse_value(key.strip(), value))
    _read_moved_keys(raw)
    cfg = _build(PipelineConfig, raw, "")
    refuse_uri_passwords_in(cfg.to_dict())
    root = _paths_root(cfg.paths.root, conf_file)
    return dataclasses.replace(cfg, paths=dataclasses.replace(cfg.paths, root=root))


# Keys that moved to the section of the stage reading them: the old name is read, with a warning, until the next
# release (docs/configuration.md).
MOVED_KEYS = {"predict.image_decode_batch_size": "batch.image_decode_batch_size",
              "drift.low_confidence_examples": "batch.low_confidence_examples"}


def _read_moved_keys(raw: dict[str, Any]) -> None:
    """Move the values set under a key's old name to its new one, each with one warning line."""
    for old, new in MOVED_KEYS.items():
        old_section, old_key = old.split(".")
        section = raw.get(old_section)
        if not isinstance(section, dict) or old_key not in section:
            continue
        new_section, new_key = new.split(".")
        target = raw.setdefault(new_section, {})
        if isinstance(target, dict) and new_key in target:
            raise PipelineError(f"config keys '{old}' and '{new}' are both set: '{old}' is the old name of '{new}', "
                                "keep only the new one")
        log.warning("config key '%s' is now '%s': rename it (the old name is read until the next release)", old, new)
        if isinstance(target, dict):
            target[new_key] = section.pop(old_key)


def _paths_root(configured: str, conf_file: str | Path | None) -> str:
    """The base of relative paths: `paths.root` as configured, taken from the default base when relative."""
    default = default_paths_root(conf_file)
    if not configured:
        return default
    root = joined_to(default, configured)
    return root if is_uri(root) else os.path.normpath(root)


def _parse_value(key: str, text: str) -> Any:
    """A `--set` value read as YAML, so that numbers, booleans and lists get their types."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise PipelineError(f"--set {key}: value '{text}' is not valid YAML (quote it)") from None


_PROFILE_NAME = re.compile(r"[A-Za-z0-9_-]+")


def profiles_dir(conf_file: str | Path | None) -> Path:
    """profiles/ beside the config file (conf/local.yaml -> conf/profiles), the checkout's without a file."""
    conf_dir = Path(os.path.abspath(conf_file)).parent if conf_file is not None else DEFAULT_CONF.parent
    return conf_dir / PROFILES_FOLDER


def known_profiles(profiles: Path) -> list[str]:
    """The names `--profile` accepts: <profiles>/<name>.yaml with a plain name."""
    return sorted(p.stem for p in profiles.glob("*.yaml") if _PROFILE_NAME.fullmatch(p.stem))


def profile_file(profile: Any, profiles: Path) -> Path | None:
    """The profile's file in `profiles`: a plain name only, so that no path can lead outside that folder. None for
    the default profile when it has no file: the config file as it is."""
    known = known_profiles(profiles)
    if profile not in known:
        if profile == DEFAULT_PROFILE:
            return None
        raise PipelineError(f"unknown profile '{profile}' (known in {profiles}: {', '.join(known) or 'none'})")
    return profiles / f"{profile}.yaml"


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise PipelineError(f"config file {path} does not exist")
    if not path.is_file():
        raise PipelineError(f"config file {path} is not a file")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise PipelineError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise PipelineError(f"config file {path} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"config file {path} is not valid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(loaded, dict):
        raise PipelineError(f"config file {path} must hold a mapping of sections")
    return loaded


def _deep_merge(base: dict, overlay: dict) -> dict:
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# Spark option names hold dots themselves: everything after this prefix is one key of spark.settings.
VERBATIM_KEYS_UNDER = "spark.settings."


def _set_dotted(raw: dict, dotted: str, value: Any) -> None:
    node = raw
    if dotted.startswith(VERBATIM_KEYS_UNDER) and len(dotted) > len(VERBATIM_KEYS_UNDER):
        parents, leaf = VERBATIM_KEYS_UNDER.rstrip(".").split("."), dotted[len(VERBATIM_KEYS_UNDER):]
    else:
        *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise PipelineError(f"unknown config key '{dotted}': '{part}' is not a section")
    node[leaf] = value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    """Instantiate dataclass `cls` from `raw`, naming the dotted key of any unknown key or wrong type."""
    if not isinstance(raw, dict):
        raise PipelineError(f"config key '{prefix.rstrip('.')}' must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    unknown = sorted(set(raw) - {f.name for f in fields}, key=str)
    if unknown:
        raise PipelineError(f"unknown config key '{prefix}{_first_leaf(unknown[0], raw[unknown[0]])}'")
    required = [f.name for f in fields if f.name not in raw and _has_no_default(f)]
    if required:
        raise PipelineError(f"config key '{prefix}{required[0]}' is required")
    built = cls(**{name: _coerce(hints[name], value, f"{prefix}{name}") for name, value in raw.items()})
    for f in fields:
        if "allowed" in f.metadata:
            _check_allowed(f.metadata["allowed"], getattr(built, f.name), f"{prefix}{f.name}")
    return built


def _has_no_default(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _check_allowed(allowed: Bounds | CountOrFraction | Choices | PlainName, value: Any, key: str) -> None:
    """The value (or every value of a mapping, named by its own key) must be one the field declares allowed."""
    if isinstance(value, dict):
        for name, item in value.items():
            _check_allowed(allowed, item, f"{key}.{name}")
    elif not allowed.admits(value):
        raise PipelineError(f"config key '{key}' must be {allowed}, got {value!r}")


def _first_leaf(key: str, value: Any) -> str:
    """`nosuch.key` rather than `nosuch` for an unknown section: the key exactly as the user wrote it."""
    while isinstance(value, dict) and len(value) == 1:
        (child, value), = value.items()
        key = f"{key}.{child}"
    return key


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".")
    if origin is dict:
        _, value_type = typing.get_args(hint)
        if not isinstance(value, dict):
            raise PipelineError(f"config key '{key}' must be a mapping, got {value!r}")
        return {str(k): _coerce(value_type, v, f"{key}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            if option is type(None) and value is None:
                return None
        return _coerce(next(a for a in typing.get_args(hint) if a is not type(None)), value, key)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise PipelineError(f"config key '{key}' must be {hint.__name__}, got {value!r}")
    return value
