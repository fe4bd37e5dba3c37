"""The first-order Taylor criterion: each score is |dL/dm| for a gate m on the channel, checked by finite differences."""

import functools

import keras
import numpy as np
import pytest
from keras import layers
from test_attention import transformer

import tfprune

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def conv_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(6, 3, name="c1")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU()(x)
    x = layers.DepthwiseConv2D(3, name="dw")(x)
    x = layers.Conv2D(5, 1, name="c2")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(3, name="head")(x))


def labelled(model, count=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count,) + tuple(model.inputs[0].shape[1:])).astype("float32")
    return x, rng.integers(0, 3, count)


def mean_loss(model, x, y):
    return float(keras.ops.convert_to_numpy(LOSS(y, model(x, training=False))))


def gated_loss(model, group, channel, gate, x, y):
    """The loss with channel `channel` of `group` multiplied by `gate` where its consumers read it."""
    by_path = {variable.path: variable for variable in model.weights}
    saved, scaled = {}, {}
    for member in group.members:
        if member.role != "input":
            continue
        for path, axis in member.weights:
            saved.setdefault(path, keras.ops.convert_to_numpy(by_path[path]).copy())
            array = scaled.setdefault(path, saved[path].astype("float64"))
            positions = [p for p, c in zip(member.positions, member.channels) if c == channel]
            index = [slice(None)] * array.ndim
            index[axis] = positions
            array[tuple(index)] *= gate
    for path, array in scaled.items():
        by_path[path].assign(array.astype("float32"))
    try:
        return mean_loss(model, x, y)
    finally:
        for path, array in saved.items():
            by_path[path].assign(array)


def assert_scores_are_gate_derivatives(model, graph, x, y, step=1e-2):
    scores = tfprune.criteria.taylor(model, graph, data=(x, y), loss=LOSS, batch_size=len(x), verbose=0)
    checked = 0
    for group in graph.groups:
        if not group.prunable or not any(member.role == "input" for member in group.members):
            continue
        assert scores[group.name].shape == (group.size,)
        for channel in range(min(group.size, 3)):
            up = gated_loss(model, group, channel, 1.0 + step, x, y)
            down = gated_loss(model, group, channel, 1.0 - step, x, y)
            derivative = (up - down) / (2 * step)
            np.testing.assert_allclose(scores[group.name][channel], abs(derivative), rtol=2e-2, atol=3e-5)
            checked += 1
    assert checked >= 6
    return scores


def test_conv_channel_scores_are_the_loss_derivative_of_a_gate_on_the_channel():
    model = conv_model()
    x, y = labelled(model)
    scores = assert_scores_are_gate_derivatives(model, tfprune.graph.build(model), x, y)
    assert set(scores) == {"c1", "c2"}
    assert all(values.max() > 1e-4 for values in scores.values())  # not vacuously zero


def test_head_and_hidden_width_scores_are_loss_derivatives_michel_2019():
    # A head's gate multiplies its rows of the output projection (Michel et al. 2019);
    # the hidden width's gate multiplies what every projection and the MLP read of it.
    model = transformer()
    x, y = labelled(model, count=16)
    graph = tfprune.graph.build(model, hidden=True)
    scores = assert_scores_are_gate_derivatives(model, graph, x, y)
    assert {"mha_heads", "mlp_in", "embed"} <= set(scores)


def test_a_channel_no_consumer_reads_scores_zero():
    model = conv_model()
    kernel = keras.ops.convert_to_numpy(model.get_layer("head").kernel).copy()
    kernel[2] = 0.0
    model.get_layer("head").kernel.assign(kernel)
    x, y = labelled(model)
    scores = tfprune.criteria.taylor(model, tfprune.graph.build(model), data=(x, y), loss=LOSS, verbose=0)
    assert scores["c2"][2] == 0.0 and np.all(np.delete(scores["c2"], 2) > 0.0)


def test_scores_average_the_batches_of_a_dataset_like_the_arrays():
    model = conv_model()
    x, y = labelled(model)
    graph = tfprune.graph.build(model)
    from_arrays = tfprune.criteria.taylor(model, graph, data=(x, y), loss=LOSS, batch_size=8, verbose=0)
    batches = iter([(x[i : i + 8], y[i : i + 8]) for i in range(0, 32, 8)])
    from_generator = tfprune.criteria.taylor(model, graph, data=batches, loss=LOSS, verbose=0)
    single = [
        tfprune.criteria.taylor(model, graph, data=(x[i : i + 8], y[i : i + 8]), loss=LOSS, batch_size=8, verbose=0)
        for i in range(0, 32, 8)
    ]
    for name in from_arrays:
        np.testing.assert_allclose(from_generator[name], from_arrays[name], rtol=1e-6)
        np.testing.assert_allclose(from_arrays[name], np.mean([s[name] for s in single], axis=0), rtol=1e-6)


def test_prune_passes_the_compiled_loss_also_of_a_nested_model():
    backbone = conv_model()
    x, y = labelled(backbone)
    features = keras.Model(backbone.inputs, backbone.get_layer("c2").output, name="backbone")
    model = keras.Sequential([features, layers.GlobalAveragePooling2D(), layers.Dense(3, name="top")])
    with pytest.raises(ValueError, match="Criterion 'taylor' needs a loss: compile model"):
        tfprune.prune(model, "taylor", rate=0.5, data=(x, y), round_to=1, verbose=0)
    model.compile(loss=LOSS)
    small, result = tfprune.prune(model, "taylor", rate=0.5, data=(x, y), round_to=1, verbose=0)
    assert result.widths_before == {"c1": 6, "c2": 5} and result.widths_after == {"c1": 3, "c2": 3}  # floor(2.5) = 2 go
    assert small.predict(x, verbose=0).shape == (32, 3)
    # The same scores as the loss passed by hand to the uncompiled, already flat model.
    flat = tfprune.graph.flatten(model)
    by_hand = functools.partial(tfprune.criteria.taylor, loss=LOSS)
    _, again = tfprune.prune(flat, by_hand, rate=0.5, data=(x, y), round_to=1, verbose=0)
    assert again.widths_after == result.widths_after


@pytest.mark.parametrize(
    "data, loss, message",
    [
        ("inputs", LOSS, "needs labels: pass `data=\\(x, y\\)`"),
        ("labelled", None, "needs a loss"),
        ("labelled", [LOSS, LOSS], "supports models with one loss; model 'functional' has 2"),
        ("labelled", "no_such_loss", "unknown loss 'no_such_loss'; pass `loss=` a Keras loss name"),
        ("no labels", LOSS, "needs labels"),
        ("dict labels", LOSS, "supports single-output models: pass `data=\\(x, y\\)` with `y` one array"),
        (None, LOSS, "needs data"),
    ],
)
def test_bad_data_or_loss_is_refused_in_one_sentence(data, loss, message):
    model = conv_model()
    x, y = labelled(model)
    data = {"inputs": x, "labelled": (x, y), "no labels": (x, None), "dict labels": (x, {"head": y}), None: None}[data]
    with pytest.raises(ValueError, match=message):
        tfprune.criteria.taylor(model, tfprune.graph.build(model), data=data, loss=loss, verbose=0)


def test_non_finite_loss_is_refused():
    model = conv_model()
    x, y = labelled(model)
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="the loss of model 'functional' is nan"):
        tfprune.criteria.taylor(model, tfprune.graph.build(model), data=(x, y), loss=LOSS, verbose=0)


def test_taylor_is_registered_and_leaves_the_model_untouched():
    model = conv_model()
    before = [keras.ops.convert_to_numpy(weight).copy() for weight in model.weights]
    x, y = labelled(model)
    assert tfprune.criteria.get("taylor") is tfprune.criteria.taylor
    assert not tfprune.criteria.comparable_across_groups("taylor")
    tfprune.criteria.taylor(model, tfprune.graph.build(model), data=(x, y), loss=LOSS, verbose=0)
    for weight, value in zip(model.weights, before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(weight), value)


def test_a_model_with_several_outputs_is_refused():
    model = conv_model()
    two = keras.Model(model.inputs, [model.output, model.get_layer("c2").output])
    x, y = labelled(model)
    with pytest.raises(ValueError, match="supports single-output models; model .* has 2 outputs"):
        tfprune.criteria.taylor(two, tfprune.graph.build(two), data=(x, y), loss=LOSS, verbose=0)


def test_the_losss_reduction_and_per_example_weights_are_honoured():
    model = conv_model()
    x, y = labelled(model, count=8)
    graph = tfprune.graph.build(model)
    mean = tfprune.criteria.taylor(model, graph, data=(x, y), loss=LOSS, batch_size=8, verbose=0)
    total = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")
    summed = tfprune.criteria.taylor(model, graph, data=(x, y), loss=total, batch_size=8, verbose=0)
    # Weights 1 on the first two examples, 0 elsewhere: the mean loss of those two examples.
    weight = np.zeros(8, "float32")
    weight[:2] = 1.0
    weighted = tfprune.criteria.taylor(model, graph, data=iter([(x, y, weight)]), loss=LOSS, verbose=0)
    first_two = tfprune.criteria.taylor(model, graph, data=(x[:2], y[:2]), loss=LOSS, batch_size=2, verbose=0)
    for name in mean:
        np.testing.assert_allclose(summed[name], 8 * mean[name], rtol=1e-4)  # a sum over the 8 examples
        np.testing.assert_allclose(weighted[name], first_two[name], rtol=1e-4, atol=1e-9)
