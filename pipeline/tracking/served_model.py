"""The registered model as MLflow serves it: one pyfunc that takes what clients send, checked, never guessed at.

Every registered version names this module as its pyfunc loader and carries the pipeline package under code/, so
`mlflow models serve -m models:/<name>@champion` (`make serve`) and `mlflow.pyfunc.load_model` load the version's
checked data/model.keras through `_load_pyfunc`. One request holds images of one kind:

- [0, 1] floats, shape (n, 28, 28) or (n, 28, 28, 1): what the network takes, as MNIST's curated tables hold it;
- 0-255 integers (uint8 pixels), the same shapes: raw MNIST, or any 8-bit greyscale 28x28 array;
- image files (PNG, JPEG, BMP, GIF, TIFF, WebP; any size up to predict.max_image_pixels), base64 strings, shape (n,):
  converted to the MNIST convention by the same code as `jobs/predict.py` and scheduled scoring
  (pipeline.formats.images), blank pictures refused unless data.blank_images is warn.

Each image gets a row: digit, confidence (its probability) and the ten probabilities. Anything else (floats above 1
such as 0-255 values sent as floats, another shape, text that is not an image) is an MlflowException with
INVALID_PARAMETER_VALUE (RequestRefused), which the scoring server answers with HTTP 400 and the one line saying what
is wrong.
"""
from __future__ import annotations

import base64
import binascii
import json
import os

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from pipeline.schema import IMAGE_HEIGHT, IMAGE_SHAPE, IMAGE_WIDTH, NUM_CLASSES

SETTINGS_FILE = "serving.json"     # in the model's data/ folder, beside model.keras
KERAS_FILE = "model.keras"
PREDICT_BATCH = 256
ACCEPTS = ("a batch of digit images, one kind per request: [0, 1] floats of shape (n, 28, 28) or (n, 28, 28, 1); "
           "0-255 integers of the same shapes; or image files (PNG, JPEG, ...) as base64 strings, shape (n,)")
RETURNS = (f"one row per image: digit (0-{NUM_CLASSES - 1}), confidence (its probability) and probabilities "
           f"({NUM_CLASSES} floats, digits 0-{NUM_CLASSES - 1})")


def settings(cfg) -> dict:
    """What the served model applies to image files, from the config that trained it."""
    return {"max_image_pixels": cfg.predict.max_image_pixels, "blank_images": cfg.data.blank_images}


def _load_pyfunc(data_path: str, model_config=None) -> ServedModel:
    """MLflow's pyfunc entry point (loader_module): `data_path` is the version's data/ folder."""
    from pipeline.model_files import load_keras_model
    with open(os.path.join(data_path, SETTINGS_FILE)) as stream:
        found = json.load(stream)
    return ServedModel(load_keras_model(os.path.join(data_path, KERAS_FILE)), **found)


class InvalidInput(ValueError):
    """What is wrong with a request, in one line."""


class RequestRefused(MlflowException):
    """InvalidInput as MLflow reports it: HTTP 400 with the line as its message. The scoring server rewrites the
    message of any MlflowException from predict to "Failed to predict data '<the whole request>'. Error: ...", a page
    of pixel values before the line that matters; this message keeps the line it was made with."""

    def __init__(self, line: str):
        super().__init__(line, error_code=INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return self._line

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_line"):  # set once, by MlflowException.__init__
            self._line = value


class ServedModel:
    def __init__(self, model, max_image_pixels: int, blank_images: str):
        self.model = model
        self.max_image_pixels = max_image_pixels
        self.blank_images = blank_images

    def predict(self, model_input, params=None):
        import pandas as pd
        try:
            images = self.images(model_input)
        except InvalidInput as exc:
            raise RequestRefused(str(exc)) from None
        probabilities = np.asarray(self.model.predict(images, batch_size=PREDICT_BATCH, verbose=0), np.float64)
        digits = probabilities.argmax(axis=1)
        return pd.DataFrame({"digit": digits.astype(np.int64),
                             "confidence": probabilities[np.arange(len(digits)), digits],
                             "probabilities": [row.tolist() for row in probabilities]})

    def images(self, model_input) -> np.ndarray:
        """`model_input` as the network's float32 batch (n, 28, 28, 1) in [0, 1]; InvalidInput if it is not one
        of the accepted kinds."""
        values = _as_array(model_input)
        if values.size == 0 or values.shape[0] == 0:
            raise InvalidInput(f"no images in the request: {ACCEPTS}")
        if values.dtype.kind in "USO" and values.ndim == 1:
            images = self._files(values)
        else:
            images = _pixels(values)
        blank = np.flatnonzero(images.reshape(len(images), -1).max(axis=1) == 0)
        if blank.size and self.blank_images != "warn":
            raise InvalidInput(f"input {blank[0]} is a blank image (no ink) and data.blank_images is "
                               f"{self.blank_images}: {blank.size} blank image(s) in the request")
        return images

    def _files(self, values: np.ndarray) -> np.ndarray:
        from pipeline.formats.images import decode_image_bytes
        images = []
        for index, value in enumerate(values):
            if not isinstance(value, str | bytes):
                raise InvalidInput(f"input {index} is a {type(value).__name__}, not a base64-encoded image file: "
                                   f"{ACCEPTS}")
            try:
                data = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise InvalidInput(f"input {index} is not a base64-encoded image file") from None
            image, error = decode_image_bytes(data, self.max_image_pixels)
            if error is not None:
                raise InvalidInput(f"input {index} is not a readable image file: {error}")
            images.append(image)
        return np.stack(images).reshape(-1, *IMAGE_SHAPE)


def _as_array(model_input) -> np.ndarray:
    """A request's data as one array: JSON arrives as an object array (the signature's type), Python clients send
    NumPy arrays, lists or a one-column DataFrame."""
    import pandas as pd
    if isinstance(model_input, pd.DataFrame):
        if model_input.shape[1] != 1:
            raise InvalidInput(f"a table of {model_input.shape[1]} columns: {ACCEPTS}")
        model_input = model_input.iloc[:, 0].to_numpy()
    try:
        values = np.asarray(model_input)
        if values.dtype == object and values.ndim > 1:
            values = np.asarray(values.tolist())  # JSON numbers: ints stay ints, floats floats
    except ValueError:  # ragged nesting
        raise InvalidInput(f"the images are not all of one shape: {ACCEPTS}") from None
    return values


def _pixels(values: np.ndarray) -> np.ndarray:
    shape = tuple(values.shape)
    if not (shape[1:] == (IMAGE_HEIGHT, IMAGE_WIDTH) or shape[1:] == IMAGE_SHAPE):
        raise InvalidInput(f"input of shape {shape}: {ACCEPTS}")
    if values.dtype.kind in "iu":
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > 255:
            raise InvalidInput(f"integer pixels from {low} to {high}: integer images are 0-255")
        return (values.astype(np.float32) / np.float32(255.0)).reshape(-1, *IMAGE_SHAPE)
    if values.dtype.kind != "f":
        raise InvalidInput(f"pixels of type {values.dtype}: {ACCEPTS}")
    if not np.isfinite(values).all():
        raise InvalidInput("float pixels include NaN or infinity: float images are [0, 1]")
    low, high = float(values.min()), float(values.max())
    if low < 0.0 or high > 1.0:
        raise InvalidInput(f"float pixels from {low:g} to {high:g}: float images are [0, 1] (send 0-255 pixels as "
                           "integers)")
    return values.astype(np.float32).reshape(-1, *IMAGE_SHAPE)


def signature():
    """Input: the object tensor MLflow passes through unchanged (the three kinds above are told apart and checked
    here); output: digit, confidence, probabilities."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Array, ColSpec, DataType, Schema, TensorSpec
    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(object), (-1,))]),
                          outputs=Schema([ColSpec(DataType.long, "digit"), ColSpec(DataType.double, "confidence"),
                                          ColSpec(Array(DataType.double), "probabilities")]))

