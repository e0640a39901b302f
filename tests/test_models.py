"""The model registry: each architecture's layer sequence and parameter count, counted by hand.

Conv2D(32, 3x3) on 28x28x1: 3*3*1*32 + 32 = 320, output 26x26x32; 2x2 pooling -> 13x13x32 (5,408 values).
Conv2D(64, 3x3) on 13x13x32: 3*3*32*64 + 64 = 18,496, output 11x11x64; pooling -> 5x5x64 (1,600 values).
BatchNormalization(c): 4c (gamma, beta trainable; moving mean and variance not).
"""
from __future__ import annotations

import pytest

from pipeline.errors import PipelineError
from pipeline.train.models import MODEL_BUILDERS, build_model, describe_layers

EXPECTED = {
    "model_1": ([("Conv2D", 320, [26, 26, 32]), ("MaxPooling2D", 0, [13, 13, 32]), ("Flatten", 0, [5408]),
                 ("Dense", 5408 * 128 + 128, [128]), ("Dense", 128 * 10 + 10, [10])], 693_962),
    "model_2": ([("Conv2D", 320, [26, 26, 32]), ("MaxPooling2D", 0, [13, 13, 32]),
                 ("Conv2D", 18_496, [11, 11, 64]), ("MaxPooling2D", 0, [5, 5, 64]), ("Flatten", 0, [1600]),
                 ("Dense", 1600 * 128 + 128, [128]), ("Dropout", 0, [128]), ("Dense", 1290, [10])], 225_034),
    "model_3": ([("Conv2D", 320, [26, 26, 32]), ("BatchNormalization", 128, [26, 26, 32]),
                 ("MaxPooling2D", 0, [13, 13, 32]), ("Conv2D", 18_496, [11, 11, 64]),
                 ("BatchNormalization", 256, [11, 11, 64]), ("MaxPooling2D", 0, [5, 5, 64]),
                 ("Flatten", 0, [1600]), ("Dense", 1600 * 256 + 256, [256]), ("Dropout", 0, [256]),
                 ("Dense", 256 * 10 + 10, [10])], 431_626),
    # No biases before batch normalisation (its shift replaces them): 3x3x1x32, 3x3x32x32, 3x3x32x64, 3x3x64x64
    # and 1024x256 weights; every normalisation holds 4 numbers per channel.
    "model_4": ([("Conv2D", 9 * 32, [26, 26, 32]), ("BatchNormalization", 128, [26, 26, 32]),
                 ("Activation", 0, [26, 26, 32]), ("Conv2D", 9 * 32 * 32, [24, 24, 32]),
                 ("BatchNormalization", 128, [24, 24, 32]), ("Activation", 0, [24, 24, 32]),
                 ("MaxPooling2D", 0, [12, 12, 32]), ("Conv2D", 9 * 32 * 64, [10, 10, 64]),
                 ("BatchNormalization", 256, [10, 10, 64]), ("Activation", 0, [10, 10, 64]),
                 ("Conv2D", 9 * 64 * 64, [8, 8, 64]), ("BatchNormalization", 256, [8, 8, 64]),
                 ("Activation", 0, [8, 8, 64]), ("MaxPooling2D", 0, [4, 4, 64]), ("Flatten", 0, [1024]),
                 ("Dense", 1024 * 256, [256]), ("BatchNormalization", 1024, [256]), ("Activation", 0, [256]),
                 ("Dropout", 0, [256]), ("Dense", 256 * 10 + 10, [10])], 331_306),
}


def test_the_registry_holds_exactly_the_studys_models_and_model_4():
    assert set(MODEL_BUILDERS) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_layer_sequence_and_parameter_count(name):
    layers, total = EXPECTED[name]
    model = build_model(name)
    described = [(d["type"], d["params"], d["output_shape"]) for d in describe_layers(model)]
    assert described == layers
    assert model.count_params() == total == sum(params for _, params, _ in layers)
    assert model.input_shape == (None, 28, 28, 1)
    assert model.layers[-1].get_config()["activation"] == "softmax"


def test_model_4_normalises_with_a_short_memory():
    """Momentum 0.9: the moving statistics settle in tens of steps, so a short (quick-profile) run predicts well."""
    momenta = {layer.get_config()["momentum"] for layer in build_model("model_4").layers
               if type(layer).__name__ == "BatchNormalization"}
    assert momenta == {0.9}


def test_model_3_keeps_batch_norm_statistics_out_of_training():
    model = build_model("model_3")
    non_trainable = sum(int(w.shape.num_elements()) for w in model.non_trainable_weights)
    assert non_trainable == 2 * 32 + 2 * 64


def test_unknown_model_name_is_refused():
    with pytest.raises(PipelineError, match="unknown model 'model_9' \\(registered: model_1, model_2, model_3, "
                                            "model_4\\)"):
        build_model("model_9")
