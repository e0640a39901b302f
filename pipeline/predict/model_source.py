"""Which saved model to score with: 'best' (recorded by evaluation), a model name of this run, a path, or a
registered version (models:/<name>@<alias>, models:/<name>/<version>), resolved once on the driver.

Only .keras files are accepted (see pipeline.model_files): HDF5 files and SavedModel folders are refused by name.
"""
from __future__ import annotations

from pipeline import outputs, storage
from pipeline.config import PipelineConfig
from pipeline.errors import PipelineError
from pipeline.layout import MODEL_FILE, Layout, model_file_in
from pipeline.model_files import KERAS_SUFFIX, LEGACY_SUFFIXES, legacy_format_refusal
from pipeline.model_ref import ResolvedModel, is_registry_uri
from pipeline.paths import absolute

MODEL_SUFFIXES = (KERAS_SUFFIX, *LEGACY_SUFFIXES)  # legacy ones are recognised as paths, to be refused by name


def choose_model(cfg: PipelineConfig, layout: Layout, model: str) -> ResolvedModel:
    """The model to score with. A registry URI is resolved here, once: an alias moved while the job runs does not
    change the version it scores with. A model of the run or a file has no version (the model_version column is
    null)."""
    if is_registry_uri(model):
        from pipeline.tracking.registry import resolve_model_uri
        return resolve_model_uri(cfg, model)
    name, model_file = resolve_model(layout, model)
    return ResolvedModel(name, model_file, asked=model)


def resolve_model(layout: Layout, model: str) -> tuple[str, str]:
    """(model name, model file path) for 'best', a name under layout.model_dir, or a file/folder path."""
    if model == "best":
        return best_model(layout)
    if _looks_like_path(model):
        return model_at_path(model)
    path = layout.model_file(model)
    outputs.require_stage_output(path, "train", otherwise="pass --model <path to a .keras file>")
    return model, path


def best_model(layout: Layout) -> tuple[str, str]:
    record_path = layout.evaluation_files.best_model
    record = outputs.read_stage_output(record_path, "evaluate", otherwise="pass --model <name or path>")
    if not storage.exists(record["model_path"]):
        raise PipelineError(f"best model {record['model']} recorded in {record_path} is missing at "
                            f"{record['model_path']}: rerun {outputs.job_for('train')} and "
                            f"{outputs.job_for('evaluate')}")
    return record["model"], record["model_path"]


def model_at_path(path: str) -> tuple[str, str]:
    """A .keras file, or a folder holding model.keras (a training output folder); HDF5 files and SavedModel
    folders are refused with the way to convert them."""
    path = absolute(path)  # Python workers may not share the driver's working directory
    if path.endswith(LEGACY_SUFFIXES) and storage.exists(path):
        raise legacy_format_refusal(path, "HDF5 model files (.h5, .hdf5)")
    if path.endswith(KERAS_SUFFIX) and storage.exists(path) and not storage.exists(f"{path}/saved_model.pb"):
        return _name_of(path), path
    if storage.exists(model_file_in(path)):
        return _name_of(path), model_file_in(path)
    if storage.exists(f"{path}/saved_model.pb"):
        raise legacy_format_refusal(path, "SavedModel folders")
    raise PipelineError(f"no saved model at {path}: expected a .keras file, or a folder holding {MODEL_FILE}")


def _looks_like_path(model: str) -> bool:
    return "/" in model or model.endswith(MODEL_SUFFIXES) or model.startswith(".")


def _name_of(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    if base == MODEL_FILE:
        return path.rsplit("/", 2)[-2]
    return base.rsplit(".", 1)[0] if base.endswith(MODEL_SUFFIXES) else base
