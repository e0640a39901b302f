"""The CNNs of the original study and the chapter after it (model_4), in one registry. Adding a model: one
builder function here, decorated with `@register("name")`, and one entry under `train.models` in conf/local.yaml
with its epochs (and, optionally, its recipe: pipeline/config/schema.py ModelConfig).

TensorFlow is imported inside the builders so that importing this module (e.g. on the Spark driver) stays cheap.
"""
from __future__ import annotations

from collections.abc import Callable

from pipeline.schema import IMAGE_SHAPE, NUM_CLASSES

MODEL_BUILDERS: dict[str, Callable] = {}


def register(name: str) -> Callable:
    def _register(builder: Callable) -> Callable:
        MODEL_BUILDERS[name] = builder
        return builder
    return _register


@register("model_1")
def model_1(input_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES):
    """One convolution: the study's baseline (about 97.5% validation accuracy in 5 epochs)."""
    from tensorflow import keras
    from tensorflow.keras import layers
    return keras.Sequential([
        keras.Input(shape=input_shape),
        layers.Conv2D(32, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dense(num_classes, activation="softmax"),
    ], name="model_1")


@register("model_2")
def model_2(input_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES):
    """Two convolutions and dropout (about 98.5% in 10 epochs)."""
    from tensorflow import keras
    from tensorflow.keras import layers
    return keras.Sequential([
        keras.Input(shape=input_shape),
        layers.Conv2D(32, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(num_classes, activation="softmax"),
    ], name="model_2")


@register("model_3")
def model_3(input_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES):
    """Two convolutions with batch normalisation and a 256-unit dense layer (about 99.2% in 12 epochs)."""
    from tensorflow import keras
    from tensorflow.keras import layers
    return keras.Sequential([
        keras.Input(shape=input_shape),
        layers.Conv2D(32, (3, 3), activation="relu"),
        layers.BatchNormalization(),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.BatchNormalization(),
        layers.MaxPooling2D((2, 2)),
        layers.Flatten(),
        layers.Dense(256, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(num_classes, activation="softmax"),
    ], name="model_3")


@register("model_4")
def model_4(input_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES):
    """Beyond the study: each of model_3's convolutions becomes two stacked 3x3 ones (a 5x5 view with a
    non-linearity between), batch normalisation after every layer but the last, dropout before the classifier.
    Its recipe in conf/local.yaml adds random shifts, rotations and zooms of the training images (they keep the
    seeds together: sd 0.02 points with them, 0.11 without), 25 epochs, a batch of 128, a cosine learning rate
    and the best validation epoch kept (benchmarks/README.md). Convolutions and the dense layer
    carry no bias: the normalisation after each has its own shift. Momentum 0.9 (Keras: 0.99) lets the moving
    statistics settle within about 50 steps instead of 500, so even a short run predicts with them well."""
    from tensorflow import keras
    from tensorflow.keras import layers

    def normalised(layer):
        return [layer, layers.BatchNormalization(momentum=0.9), layers.Activation("relu")]

    return keras.Sequential([
        keras.Input(shape=input_shape),
        *normalised(layers.Conv2D(32, (3, 3), use_bias=False)),
        *normalised(layers.Conv2D(32, (3, 3), use_bias=False)),
        layers.MaxPooling2D((2, 2)),
        *normalised(layers.Conv2D(64, (3, 3), use_bias=False)),
        *normalised(layers.Conv2D(64, (3, 3), use_bias=False)),
        layers.MaxPooling2D((2, 2)),
        layers.Flatten(),
        *normalised(layers.Dense(256, use_bias=False)),
        layers.Dropout(0.4),
        layers.Dense(num_classes, activation="softmax"),
    ], name="model_4")


def build_model(name: str, input_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES):
    """An uncompiled Keras model by registry name."""
    from pipeline.errors import PipelineError
    if name not in MODEL_BUILDERS:
        raise PipelineError(f"unknown model '{name}' (registered: {', '.join(sorted(MODEL_BUILDERS))})")
    return MODEL_BUILDERS[name](input_shape, num_classes)


def describe_layers(model) -> list[dict]:
    """Layer name, type, output shape and parameter count: for history.json and the report."""
    return [{"name": layer.name, "type": type(layer).__name__,
             "output_shape": list(layer.output_shape[1:]) if hasattr(layer, "output_shape") else None,
             "params": int(layer.count_params())} for layer in model.layers]
