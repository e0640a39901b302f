"""A model's training recipe beyond the shared settings: on-the-fly augmentation and the learning-rate schedule.

One definition for the pipeline's workers and for benchmarks/model4.py. Augmentation lives in each rank's tf.data
input pipeline (training batches only), never in the saved model, which stays a plain Keras model. TensorFlow is
imported inside the functions: the driver imports this module to describe a recipe without starting TensorFlow.
"""
from __future__ import annotations

import math

# Small enough that a digit stays the same digit: MNIST's digits are centred by their centre of mass in a 20x20
# box inside the 28x28 frame, so a 10% shift (about 3 pixels) keeps them in the frame.
SHIFT_FRACTION = 0.1       # of the height and width
ROTATION_FRACTION = 10 / 360  # of a full turn: +-10 degrees (a 6 or a 9 stays what it is)
ZOOM_FRACTION = 0.1        # +-10% of the size


def augmenter(seed: int):
    """Random shifts, rotations and zooms of a batch of (n, 28, 28, 1) images, as Keras preprocessing layers used
    outside the model (their `training=True` call). Seeded: the same seed replays the same transformations."""
    from tensorflow import keras
    from tensorflow.keras import layers
    return keras.Sequential([
        layers.RandomRotation(ROTATION_FRACTION, fill_mode="constant", seed=seed),
        layers.RandomZoom(ZOOM_FRACTION, fill_mode="constant", seed=seed + 1),
        layers.RandomTranslation(SHIFT_FRACTION, SHIFT_FRACTION, fill_mode="constant", seed=seed + 2),
    ], name="augmentation")


def augmented(dataset, seed: int):
    """`dataset` of (images, labels) batches with every image transformed on the fly; labels unchanged."""
    import tensorflow as tf
    augment = augmenter(seed)
    return dataset.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=1,
                       deterministic=True).prefetch(tf.data.AUTOTUNE)


def cosine_learning_rate(step: int, warmup_steps: int, total_steps: int, peak: float) -> float | None:
    """The learning rate of `step` (counting from 0) after the warm-up: half a cosine from `peak` at the warm-up's
    end down towards 0 at the last step. None during the warm-up, which Horovod's warm-up callback owns."""
    if step < warmup_steps:
        return None
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def cosine_schedule_callback(peak: float, warmup_epochs: int, epochs: int, steps_per_epoch: int):
    """A Keras callback setting the optimizer's learning rate before every training step from the warm-up's end
    on (cosine_learning_rate). Placed after the warm-up callback, it takes over where that one stops."""
    from tensorflow import keras

    class CosineSchedule(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            lr = cosine_learning_rate(self.epoch * steps_per_epoch + batch, warmup_epochs * steps_per_epoch,
                                      epochs * steps_per_epoch, peak)
            if lr is not None:
                self.model.optimizer.learning_rate.assign(lr)

    return CosineSchedule()
