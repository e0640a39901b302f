"""A trained model as an MLflow model whose flavor holds our own model.keras.

MLflow's TensorFlow flavor on TensorFlow < 2.16 saves a Keras model only as a SavedModel folder or an HDF5 file,
formats that can run code when loaded. We let it write its MLmodel, signature, input example and environment files,
then put our checked model.keras in place of its model file and record `save_format: keras`, which its loader reads
(it loads data/model.keras). So every registered version holds exactly the bytes of the run's model.keras: the
pipeline downloads and checks that file (pipeline.model_files) and never deserialises anything else, while
`mlflow.tensorflow.load_model("models:/<name>@champion")` still works for users.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import types

from pipeline.versions import package_versions

MODEL_ARTIFACT = "model"                  # the logged model's name in its run
KERAS_FILE_IN_MODEL = "data/model.keras"  # where the flavor keeps the model, relative to the logged model
_REPLACED = ("model.h5", "global_custom_objects.cloudpickle", "custom_objects.cloudpickle")


def log_keras_model(client, run_id: str, model_file: str, input_example, registered_model: str,
                    tags: dict[str, str]):
    """Log the local .keras file `model_file` under `run_id` with its signature and input example, and register it
    as a new version of `registered_model`; returns the ModelVersion."""
    import mlflow
    from mlflow.models import Model

    from pipeline.model_files import load_keras_model
    model = load_keras_model(model_file)  # checked archive, safe mode
    flavor = types.SimpleNamespace(__name__="mlflow.tensorflow", save_model=_saver(model_file))
    # Created here, in the run's experiment: left to Model.log it would land in the process's active experiment
    # (Default, whose artifacts go to ./mlruns of the working directory).
    logged = client.create_logged_model(client.get_run(run_id).info.experiment_id, name=MODEL_ARTIFACT,
                                        source_run_id=run_id)
    with _quiet_keras():  # MLflow checks the input example with model.predict: no progress bar in job logs
        info = Model.log(artifact_path=None, name=MODEL_ARTIFACT, flavor=flavor, model=model, run_id=run_id,
                         model_id=logged.model_id, signature=image_signature(), input_example=input_example,
                         pip_requirements=requirements())
    return mlflow.register_model(info.model_uri, registered_model, tags=tags)


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


def _saver(model_file: str):
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
        mlflow_model.flavors["tensorflow"]["save_format"] = "keras"
        mlflow_model.save(os.path.join(path, "MLmodel"))
    return save_model


def image_signature():
    """Input: a batch of 28x28x1 float32 images in [0, 1]; output: the 10 class probabilities."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    from pipeline.schema import IMAGE_SHAPE, NUM_CLASSES
    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *IMAGE_SHAPE))]),
                          outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, NUM_CLASSES))]))


def requirements() -> list[str]:
    """Pinned from this environment: MLflow would otherwise load the model in a subprocess to infer them."""
    versions = package_versions()
    return [f"{name}=={versions[name]}" for name in ("tensorflow-cpu", "numpy") if versions[name] != "not installed"]
