"""A trained model as an MLflow model whose flavors hold our own model.keras.

MLflow's TensorFlow flavor on TensorFlow < 2.16 saves a Keras model only as a SavedModel folder or an HDF5 file,
formats that can run code when loaded. We let it write its MLmodel, signature, input example and environment files,
then put our checked model.keras in place of its model file and record `save_format: keras`, which its loader reads
(it loads data/model.keras). So every registered version holds exactly the bytes of the run's model.keras: the
pipeline downloads and checks that file (pipeline.model_files) and never deserialises anything else, while
`mlflow.tensorflow.load_model("models:/<name>@champion")` still works for users.

The pyfunc flavor (what `mlflow models serve` and `mlflow.pyfunc.load_model` use) is ours:
pipeline.tracking.served_model, shipped with the version under code/, takes floats, 0-255 pixels or image files
and answers digit, confidence and probabilities (the TensorFlow flavor's pyfunc took [0, 1] floats alone and
answered 0-255 pixels with confident wrong digits).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import types
import zipfile

from pipeline.config import PipelineConfig
from pipeline.tracking import served_model

MODEL_ARTIFACT = "model"                  # the logged model's name in its run
KERAS_FILE_IN_MODEL = "data/model.keras"  # where the flavor keeps the model, relative to the logged model
_REPLACED = ("model.h5", "global_custom_objects.cloudpickle", "custom_objects.cloudpickle")
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the pipeline package, served with it
REGISTERED_MODEL_DESCRIPTION = (
    "Handwritten digit classifier trained on MNIST by the Spark pipeline (jobs/run_pipeline.py): one version per "
    "trained model (the study's model_1..model_3 and our model_4); alias 'champion' = the version in service, "
    "'challenger' = the best of the latest evaluation. Each version's description gives its recipe, data and test "
    f"accuracy. Served with `make serve`: takes {served_model.ACCEPTS}; returns {served_model.RETURNS}.")
# What the served model imports (served_model, pipeline.formats.images, pipeline.schema, pipeline.model_files).
SERVED_REQUIREMENTS = ("tensorflow-cpu", "numpy", "pandas", "pillow", "pyarrow", "pyspark")


def log_keras_model(client, run_id: str, model_file: str, input_example, cfg: PipelineConfig,
                    tags: dict[str, str], name: str = MODEL_ARTIFACT, description: str = ""):
    """Log the local .keras file `model_file` under `run_id` as logged model `name` with its signature and input
    example, and register it as a new version of tracking.registered_model described by `description`; returns the
    ModelVersion."""
    import mlflow
    from mlflow.models import Model

    from pipeline.model_files import load_keras_model
    model = load_keras_model(model_file)  # checked archive, safe mode
    flavor = types.SimpleNamespace(__name__="mlflow.tensorflow",
                                   save_model=_saver(model_file, served_model.settings(cfg)))
    # Created here, in the run's experiment: left to Model.log it would land in the process's active experiment
    # (Default, whose artifacts go to ./mlruns of the working directory).
    logged = client.create_logged_model(client.get_run(run_id).info.experiment_id, name=name, source_run_id=run_id)
    with _quiet_keras():  # MLflow checks the input example with model.predict: no progress bar in job logs
        info = Model.log(artifact_path=None, name=name, flavor=flavor, model=model, run_id=run_id,
                         model_id=logged.model_id, signature=served_model.signature(), input_example=input_example,
                         pip_requirements=requirements(),
                         metadata={"accepts": served_model.ACCEPTS, "returns": served_model.RETURNS})
    registered = cfg.tracking.registered_model
    version = mlflow.register_model(info.model_uri, registered, tags=tags)
    if description:
        client.update_model_version(registered, version.version, description=description)
    if not client.get_registered_model(registered).description:
        client.update_registered_model(registered, description=REGISTERED_MODEL_DESCRIPTION)
    return version


@contextlib.contextmanager
def _quiet_keras():
    from tensorflow import keras
    was_interactive = keras.utils.is_interactive_logging_enabled()
    keras.utils.disable_interactive_logging()
    try:
        yield
    finally:
        if was_interactive:
            keras.utils.enable_interactive_logging()


def _saver(model_file: str, serving: dict):
    def save_model(model, path, mlflow_model=None, **kwargs):
        import warnings

        import mlflow.tensorflow
        with warnings.catch_warnings():  # "HDF5 is legacy": the file is replaced right below
            warnings.simplefilter("ignore", UserWarning)
            mlflow.tensorflow.save_model(model, path, mlflow_model=mlflow_model,
                                         keras_model_kwargs={"save_format": "h5"}, **kwargs)
        data = os.path.join(path, "data")
        for name in _REPLACED:  # HDF5, and pickles of Keras' global custom objects (we register none)
            if os.path.exists(os.path.join(data, name)):
                os.remove(os.path.join(data, name))
        shutil.copyfile(model_file, os.path.join(path, KERAS_FILE_IN_MODEL))
        with open(os.path.join(data, "save_format.txt"), "w") as out:
            out.write("keras")
        with open(os.path.join(data, served_model.SETTINGS_FILE), "w") as out:
            json.dump(serving, out)
        copy_package(os.path.join(path, "code", "pipeline"))
        mlflow_model.flavors["tensorflow"]["save_format"] = "keras"
        mlflow_model.flavors["python_function"].update(loader_module=served_model.__name__, code="code")
        mlflow_model.save(os.path.join(path, "MLmodel"))
    return save_model


def copy_package(destination: str, package_dir: str = PACKAGE_DIR) -> None:
    """The pipeline package's files (no caches) into `destination`, from a folder (a checkout, a venv) or from the
    zip that spark-submit ships with --py-files (dist/pipeline.zip: the package is then .../pipeline.zip/pipeline)."""
    if os.path.isdir(package_dir):
        shutil.copytree(package_dir, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        return
    archive, found, inside = package_dir.partition(".zip" + os.sep)
    if not found or not zipfile.is_zipfile(archive + ".zip"):
        raise FileNotFoundError(f"the pipeline package at {package_dir} is neither a folder nor in a zip archive")
    prefix = inside.rstrip("/") + "/"
    with zipfile.ZipFile(archive + ".zip") as bundle:
        for member in bundle.infolist():
            relative = member.filename[len(prefix):]
            if (not member.filename.startswith(prefix) or member.is_dir() or "__pycache__" in relative.split("/")
                    or relative.endswith(".pyc")):
                continue
            target = os.path.join(destination, *relative.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with bundle.open(member) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)


def requirements() -> list[str]:
    """Pinned from this environment: MLflow would otherwise load the model in a subprocess to infer them."""
    from importlib import metadata
    found = []
    for name in SERVED_REQUIREMENTS:
        try:
            found.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return found
