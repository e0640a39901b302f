"""Horovod's learning-rate warm-up as a Keras schedule: computed in the training step's graph, not in Python.

hvd.callbacks.LearningRateWarmupCallback sets the rate from Python before every batch (reading and writing the
variable) and makes Keras call its batch hooks and convert the logs every step; as a schedule the same rates
cost nothing per step. The rate for step s (counted from the start of training, restored with the optimizer on
resume) is the callback's: base / size * (e * (size - 1) / warmup_epochs + 1) with e = (s + 1) / steps_per_epoch
while s < warmup_epochs * steps_per_epoch, then base (base = the rate for one worker x size).
"""
from __future__ import annotations

import tensorflow as tf
from tensorflow import keras


@keras.saving.register_keras_serializable(package="pipeline")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    def __init__(self, base_rate: float, size: int, warmup_epochs: int, steps_per_epoch: int):
        self.base_rate, self.size = base_rate, size
        self.warmup_epochs, self.steps_per_epoch = warmup_epochs, steps_per_epoch

    def __call__(self, step):
        if self.size == 1 or self.warmup_epochs == 0:
            return tf.constant(self.base_rate, tf.float32)
        step = tf.cast(step, tf.float32)
        epoch = (step + 1) / self.steps_per_epoch
        warming = self.base_rate / self.size * (epoch * (self.size - 1) / self.warmup_epochs + 1)
        return tf.where(step < self.warmup_epochs * self.steps_per_epoch, warming, self.base_rate)

    def get_config(self) -> dict:
        return {"base_rate": self.base_rate, "size": self.size, "warmup_epochs": self.warmup_epochs,
                "steps_per_epoch": self.steps_per_epoch}
