import keras
import numpy as np
import pytest

from tfprune import models


def test_mobilenet_v3_small_has_momentum_no_rescaling_and_is_seeded():
    model = models.mobilenet_v3("small", input_shape=(32, 32, 3), classes=7, bn_momentum=0.8, seed=3)
    assert model.output_shape == (None, 7)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(layer.momentum == 0.8 for layer in norms)
    assert not any(isinstance(layer, keras.layers.Rescaling) for layer in model.layers)
    again = models.mobilenet_v3("small", input_shape=(32, 32, 3), classes=7, bn_momentum=0.8, seed=3)
    for first, second in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(first, second)


def test_mobilenet_v3_bad_arguments():
    with pytest.raises(ValueError, match="variant="):
        models.mobilenet_v3("medium")
    with pytest.raises(ValueError, match="bn_momentum=1.5"):
        models.mobilenet_v3("small", bn_momentum=1.5)
