import keras
import numpy as np
import pytest
from backend_gradients import gradients

from tfprune import regularizers


def _value_and_gradient(regularizer, array):
    variable = keras.Variable(array)
    (gradient,) = gradients(lambda: regularizer(variable.value), [variable])
    return float(keras.ops.convert_to_numpy(regularizer(variable.value))), gradient


def test_bn_gamma_l1_value_and_gradient_equal_closed_form():
    gamma = np.array([0.5, -2.0, 0.0, 3.0], dtype="float32")
    value, gradient = _value_and_gradient(regularizers.BNGammaL1(0.1), gamma)
    assert value == pytest.approx(0.1 * (0.5 + 2.0 + 0.0 + 3.0), rel=1e-6)
    np.testing.assert_allclose(gradient, [0.1, -0.1, 0.0, 0.1], rtol=1e-6)


def _reference_group_lasso(kernel, group):
    """NumPy loop over the groups, independent of the implementation's axis logic."""
    if group == "filter":
        groups = [kernel[..., n] for n in range(kernel.shape[-1])]
    elif group == "channel":
        groups = [kernel[..., c, :] for c in range(kernel.shape[-2])]
    elif group == "shape":
        flat = kernel.reshape(-1, kernel.shape[-1])
        groups = [flat[i] for i in range(flat.shape[0])]
    else:
        groups = [kernel]
    return sum(np.sqrt(np.sum(np.square(g, dtype="float64"))) for g in groups)


@pytest.mark.parametrize("group", ["filter", "channel", "shape", "depth"])
@pytest.mark.parametrize("shape", [(3, 3, 4, 5), (6, 7), (3, 4, 2)])
def test_group_lasso_value_matches_numpy_loop(group, shape):
    kernel = np.random.default_rng(0).normal(size=shape).astype("float32")
    value, _ = _value_and_gradient(regularizers.GroupLasso(0.3, group), kernel)
    assert value == pytest.approx(0.3 * _reference_group_lasso(kernel, group), rel=1e-5)


@pytest.mark.parametrize("group", ["filter", "channel", "shape", "depth"])
def test_group_lasso_gradient_matches_finite_differences(group):
    kernel = np.random.default_rng(1).normal(size=(2, 2, 3, 4))
    regularizer = regularizers.GroupLasso(0.5, group)
    _, gradient = _value_and_gradient(regularizer, kernel.astype("float64"))
    numeric = np.zeros_like(kernel)
    step = 1e-6
    for index in np.ndindex(kernel.shape):
        plus, minus = kernel.copy(), kernel.copy()
        plus[index] += step
        minus[index] -= step
        numeric[index] = (
            0.5 * (_reference_group_lasso(plus, group) - _reference_group_lasso(minus, group))
        ) / (2 * step)
    np.testing.assert_allclose(gradient, numeric, rtol=1e-5, atol=1e-7)


def test_group_lasso_filter_gradient_is_kernel_over_group_norm_and_zero_group_is_finite():
    kernel = np.zeros((1, 1, 2, 3), dtype="float32")
    kernel[0, 0, :, 0] = [3.0, 4.0]  # norm 5
    kernel[0, 0, :, 2] = [0.0, 2.0]  # norm 2; filter 1 is all zero
    value, gradient = _value_and_gradient(regularizers.GroupLasso(1.0, "filter"), kernel)
    assert value == pytest.approx(7.0)
    np.testing.assert_allclose(gradient[0, 0, :, 0], [0.6, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(gradient[0, 0, :, 1], [0.0, 0.0])
    np.testing.assert_allclose(gradient[0, 0, :, 2], [0.0, 1.0], rtol=1e-6)


def test_regularizers_serialize_round_trip():
    for regularizer in (regularizers.BNGammaL1(3e-5), regularizers.GroupLasso(2e-4, "shape")):
        restored = keras.regularizers.deserialize(keras.regularizers.serialize(regularizer))
        assert type(restored) is type(regularizer)
        assert restored.get_config() == regularizer.get_config()


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match=r"`l1` must be a non-negative.*l1=-1"):
        regularizers.BNGammaL1(-1)
    with pytest.raises(ValueError, match=r"`l2` must be.*l2='big'"):
        regularizers.GroupLasso("big")
    with pytest.raises(ValueError, match=r"`group` must be one of.*group='row'"):
        regularizers.GroupLasso(1e-4, "row")
    with pytest.raises(ValueError, match=r"at least 2 dimensions.*\(4,\)"):
        regularizers.GroupLasso(1e-4)(keras.ops.ones((4,)))


def _small_model():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.DepthwiseConv2D(3, name="depthwise")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, name="dense")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(2)
    model.get_layer("bn").set_weights(
        [rng.normal(size=4).astype("float32") for _ in range(2)]
        + [np.zeros(4, "float32"), np.ones(4, "float32")]
    )
    return model


def test_attach_adds_penalties_equal_to_closed_form_and_keeps_input_untouched(tmp_path):
    model = _small_model()
    before = [w.copy() for w in model.get_weights()]
    sparse = regularizers.attach(
        model, bn_gamma=1e-2, kernel=regularizers.GroupLasso(1e-3, "filter")
    )
    assert model.losses == []
    for original, kept in zip(before, model.get_weights()):
        np.testing.assert_array_equal(original, kept)

    gamma = model.get_layer("bn").get_weights()[0]
    kernels = [model.get_layer(name).get_weights()[0] for name in ("conv", "depthwise", "dense")]
    expected = 1e-2 * np.abs(gamma).sum() + sum(
        1e-3 * _reference_group_lasso(kernel, "filter") for kernel in kernels
    )
    assert len(sparse.losses) == 4
    assert float(keras.ops.convert_to_numpy(sum(sparse.losses))) == pytest.approx(expected, rel=1e-5)

    x = np.random.default_rng(3).normal(size=(2, 6, 6, 2)).astype("float32")
    np.testing.assert_allclose(sparse.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)

    path = tmp_path / "sparse.keras"
    sparse.save(path)
    restored = keras.models.load_model(path)
    assert isinstance(restored.get_layer("bn").gamma_regularizer, regularizers.BNGammaL1)
    assert float(keras.ops.convert_to_numpy(sum(restored.losses))) == pytest.approx(expected, rel=1e-5)


def test_attach_kernel_layers_selects_layers():
    sparse = regularizers.attach(
        _small_model(),
        kernel=regularizers.GroupLasso(1e-3),
        kernel_layers=lambda layer: layer.name == "dense",
    )
    assert len(sparse.losses) == 1
    assert sparse.get_layer("dense").kernel_regularizer is not None
    assert sparse.get_layer("conv").kernel_regularizer is None


def test_attach_rejects_non_callable_regularizer():
    with pytest.raises(TypeError, match=r"`kernel` must be a regularizer.*kernel='l1'"):
        regularizers.attach(_small_model(), kernel="l1")
