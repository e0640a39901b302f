"""Model files must not run code: only the .keras format is loaded, always in Keras safe mode, and checked first.

Keras 2.15 ignores `safe_mode` for legacy HDF5 files and SavedModel folders: a Lambda layer in them runs its
Python bytecode on every worker that loads the model. A .keras file is a zip holding config.json (what to
build) and the weights; safe mode refuses Lambda bytecode in it, but still imports any module the config names
and returns any function in it. So a .keras file is accepted only when every object in its config is a Keras
built-in, with no Lambda layer, and then it must load with safe_mode=True in a separate process on the driver
(the pytest and driver processes never import TensorFlow) before any Spark job starts. Workers repeat the cheap
archive check, so a file swapped after the driver's check is refused too.

That loading process costs a TensorFlow import (seconds), which a small day's scoring job would pay every day for
the same champion: a model that passed is remembered by its SHA-256, per TensorFlow version, in a folder only this
user can write (checked_models_folder), so each version of a model is loaded in a probe once per machine.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import stat
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import PipelineError

KERAS_SUFFIX = ".keras"
LEGACY_SUFFIXES = (".h5", ".hdf5")
CODE_CLASSES = ("Lambda", "__lambda__")  # configs that carry Python bytecode
PROBE_TIMEOUT_SECONDS = 300
MAX_CONFIG_BYTES = 64 * 1024 * 1024  # a model config is kilobytes; bigger is a zip bomb, not a model
_REFUSED_EXIT = 3
# One process checks every file it is given, in order, and stops at the first refused: importing TensorFlow is
# most of a probe's cost, so evaluation checks its models with one import rather than one per model.
_SAFE_LOAD_PROBE = f"""
import sys
import tensorflow as tf
for index, path in enumerate(sys.argv[1:]):
    try:
        tf.keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:
        print(index, f"{{type(exc).__name__}}: {{exc}}".splitlines()[0][:500])
        sys.exit({_REFUSED_EXIT})
"""

_VERIFIED: set[str] = set()  # sha256 of model files that passed the driver's checks in this process
CHECKED_MODELS_ENV = "MNIST_CHECKED_MODELS"

log = logging.getLogger(__name__)


def legacy_format_refusal(path: str, kind: str) -> PipelineError:
    """The one-line refusal of an HDF5 file or SavedModel folder, with the way to convert a trusted one."""
    target = path.rsplit("/", 1)[-1].rsplit(".", 1)[0] + KERAS_SUFFIX
    return PipelineError(f"model {path}: {kind} are refused because loading them can run code stored in "
                         f"the model (Keras safe mode does not cover them); if you trust it, convert it in a trusted "
                         f"session: tf.keras.models.load_model('{path}').save('{target}')")


def archive_problem(name: str, data: bytes | str) -> str | None:
    """Why the .keras archive `data` (bytes or a local path) must not be loaded, or None when it may be."""
    if not name.endswith(KERAS_SUFFIX):
        return f"only {KERAS_SUFFIX} model files are loaded"
    try:
        with zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else data) as archive:
            if archive.getinfo("config.json").file_size > MAX_CONFIG_BYTES:
                return f"not a valid .keras file (config.json larger than {MAX_CONFIG_BYTES} bytes)"
            config = json.loads(archive.read("config.json"))
    except KeyError:
        return "not a valid .keras file (no config.json in the archive)"
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError):
        return "not a valid .keras file (not a readable zip archive)"
    except ValueError as exc:
        return f"not a valid .keras file (config.json is not JSON: {exc})"
    return next(_code_in_config(config), None)


def _code_in_config(config) -> Iterator[str]:
    """A description of every object in a Keras config that would bring Python code rather than a built-in."""
    if isinstance(config, list):
        for item in config:
            yield from _code_in_config(item)
        return
    if not isinstance(config, dict):
        return
    class_name, module = config.get("class_name"), config.get("module")
    if class_name in CODE_CLASSES or "function_type" in config:
        yield (f"it holds a Lambda layer{_named(config)} (Python code, which would run on every worker); only "
               f"built-in Keras layers are loaded")
    elif class_name is not None and module is not None and not _is_keras_module(module):
        what = f"function {config.get('config')!r}" if class_name == "function" else f"class {class_name!r}"
        yield f"its config names {what} from module {module!r}, not from Keras (only Keras built-ins are loaded)"
    for value in config.values():
        yield from _code_in_config(value)


def _named(config: dict) -> str:
    inner = config.get("config")
    return f" {inner['name']!r}" if isinstance(inner, dict) and isinstance(inner.get("name"), str) else ""


def _is_keras_module(module) -> bool:
    return isinstance(module, str) and (module == "keras" or module.startswith("keras."))


def check_model_file(path: str) -> None:
    """On the driver: refuse `path` in one line unless it is a .keras archive of built-ins that Keras loads in safe
    mode. A file already verified in this process (same bytes) is not checked again."""
    check_model_files([path])


def check_model_files(paths: list[str]) -> None:
    """check_model_file for several files, with one safe-mode loading process for all the files not checked before
    (in this process, or on this machine: checked_models_folder); the first refused file is named."""
    passed, unverified = set(), {}
    for path in paths:
        data = _readable_keras_bytes(path)
        digest = hashlib.sha256(data).hexdigest()
        if digest in _VERIFIED:
            continue
        problem = archive_problem(path, data)
        if problem is not None:
            raise PipelineError(f"model {path} refused: {problem}")
        if _checked_before(digest):
            passed.add(digest)
        else:
            unverified[path] = (digest, data)
    if unverified:
        refused = _safe_load_refusal([data for _, data in unverified.values()])
        if refused is not None:
            index, reason = refused
            raise PipelineError(f"model {list(unverified)[index]} cannot be loaded safely: {reason}")
        for digest, _ in unverified.values():
            _remember_checked(digest)
            passed.add(digest)
    _VERIFIED.update(passed)


def checked_models_folder() -> Path:
    """Where models that loaded in safe mode are remembered: one empty file per SHA-256, in a folder per TensorFlow
    version (another Keras must check again). $MNIST_CHECKED_MODELS, else ~/.cache/mnist-spark-pipeline/checked-models
    ($XDG_CACHE_HOME when set)."""
    root = os.environ.get(CHECKED_MODELS_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mnist-spark-pipeline", "checked-models")
    return Path(root) / f"tensorflow-{_tensorflow_version()}"


def _tensorflow_version() -> str:
    from pipeline.versions import package_version
    return package_version("tensorflow-cpu")   # the pinned distribution (constraints.txt)


def _checked_before(digest: str) -> bool:
    """A record of `digest` in a folder only this user can write: one anybody else could write proves nothing."""
    folder = checked_models_folder()
    try:
        return _private(folder) and (folder / digest).is_file()
    except OSError:
        return False


def _remember_checked(digest: str) -> None:
    folder = checked_models_folder()
    try:
        folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)   # private whatever the umask
        folder.mkdir(mode=0o700, exist_ok=True)
        if _private(folder):
            (folder / digest).touch()
    except OSError as exc:  # a read-only home: the probe simply runs again next time
        log.debug("cannot remember the checked model %s in %s: %s", digest, folder, exc)


def _private(folder: Path) -> bool:
    """`folder` and the folder above it are owned by this user and writable by nobody else."""
    for path in (folder, folder.parent):
        info = path.stat()
        if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return False
    return True


def _readable_keras_bytes(path: str) -> bytes:
    from pipeline import storage
    if path.endswith(LEGACY_SUFFIXES):
        raise legacy_format_refusal(path, "HDF5 model files (.h5, .hdf5)")
    if not path.endswith(KERAS_SUFFIX):
        raise PipelineError(f"model {path} refused: only {KERAS_SUFFIX} model files are loaded")
    try:
        return storage.read_bytes(path)
    except OSError as exc:
        raise PipelineError(f"model {path} cannot be read: {exc}".splitlines()[0]) from None


def _safe_load_refusal(models: list[bytes]) -> tuple[int, str] | None:
    """Load every model (their bytes) with safe_mode=True in one fresh Python process: None if all load, else the
    index of the first that does not and why."""
    with tempfile.TemporaryDirectory(prefix="model-check-") as folder:
        local = [os.path.join(folder, f"model-{i}{KERAS_SUFFIX}") for i in range(len(models))]
        for path, data in zip(local, models, strict=True):
            with open(path, "wb") as out:
                out.write(data)
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
        try:
            done = subprocess.run([sys.executable, "-c", _SAFE_LOAD_PROBE, *local], capture_output=True, text=True,
                                  env=env, timeout=PROBE_TIMEOUT_SECONDS * len(models), cwd=folder)
        except subprocess.TimeoutExpired:
            return 0, f"loading took more than {PROBE_TIMEOUT_SECONDS} s per model"
    if done.returncode == 0:
        return None
    if done.returncode == _REFUSED_EXIT:
        index, _, reason = ((done.stdout.strip().splitlines() or ["0 no reason given"])[-1]).partition(" ")
        return int(index), reason
    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return 0, f"the loading process ended with code {done.returncode} ({last})"


def load_keras_model(local_path: str):
    """On a worker: the model at `local_path`, loaded only as a checked .keras archive with safe_mode=True.

    `load_model` would fall back to the unsafe legacy loaders for anything that is not a zip named .keras, so the
    archive check comes first; ValueError names the file."""
    problem = archive_problem(local_path, local_path)
    if problem is not None:
        raise ValueError(f"model {local_path} refused: {problem}")
    import tensorflow as tf
    return tf.keras.models.load_model(local_path, safe_mode=True, compile=False)
