"""Tests for DMCP: Markov keep probabilities, the expected-cost penalty, gates and training."""

import keras
import numpy as np
import pytest
from backend_gradients import gradients, needs_float64

import tfprune
from tfprune.search import (
    DMCP,
    ExpectedCostPenalty,
    MarkovChannelGates,
    expected_width,
    keep_probabilities,
)


def _sigmoid(values):
    return 1.0 / (1.0 + np.exp(-values))


def test_keep_probabilities_are_cumulative_products_of_the_transitions():
    logits = np.array([2.0, -1.0, 0.5, 3.0])
    expected = np.concatenate([[1.0], np.cumprod(_sigmoid(logits))])
    np.testing.assert_allclose(keep_probabilities(logits), expected, rtol=1e-6)


@pytest.mark.parametrize("transition, channels", [(0.9, 16), (0.5, 5), (0.99, 200)])
def test_expected_width_equals_the_geometric_closed_form(transition, channels):
    logits = np.full(channels - 1, np.log(transition / (1 - transition)))
    closed_form = (1 - transition**channels) / (1 - transition)
    np.testing.assert_allclose(float(expected_width(logits)), closed_form, rtol=1e-6)


@needs_float64
def test_expected_width_gradient_matches_closed_form_and_finite_differences():
    logits = keras.Variable(np.array([1.5, -0.5, 2.0, 0.3, -1.0]), dtype="float64")
    (gradient,) = gradients(lambda: expected_width(logits.value), [logits])
    transitions = _sigmoid(logits.numpy())
    probabilities = np.concatenate([[1.0], np.cumprod(transitions)])
    # d P_k / d logit_j = P_k (1 - t_j) for every channel k reached through transition j
    closed_form = np.array([(1 - transitions[j]) * probabilities[j + 1 :].sum() for j in range(len(transitions))])
    np.testing.assert_allclose(gradient, closed_form, rtol=1e-10)
    step = 1e-6
    for j in range(len(transitions)):
        shift = np.eye(len(transitions))[j] * step
        difference = (float(expected_width(logits.numpy() + shift)) - float(expected_width(logits.numpy() - shift))) / (2 * step)
        np.testing.assert_allclose(gradient[j], difference, rtol=1e-6)


def _small_model(width_a=8, width_b=6):
    inputs = keras.Input((8, 8, 3))
    hidden = keras.layers.Conv2D(width_a, 3, padding="same", name="conv_a")(inputs)
    hidden = keras.layers.BatchNormalization(name="bn_a")(hidden)
    hidden = keras.layers.ReLU()(hidden)
    hidden = keras.layers.Conv2D(width_b, 1, name="conv_b")(hidden)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    outputs = keras.layers.Dense(4, name="logits")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _small_data(count=256, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((count, 8, 8, 3), dtype=np.float32), rng.integers(0, 4, count).astype("int32")


def _chain(gates, group, logits):
    start = sum(size - 1 for size in gates.group_sizes[:group])
    return logits[start : start + gates.group_sizes[group] - 1] * gates.logit_scale


def test_gates_scale_each_read_channel_by_its_keep_probability():
    dmcp = DMCP(_small_model(), target=0.5, channel_order="index")
    gates = dmcp.gates
    logits = np.random.default_rng(0).normal(0, 0.02, gates.transition_logits.shape)
    gates.transition_logits.assign(logits)
    probabilities = [np.asarray(keep_probabilities(_chain(gates, group, logits))) for group in range(2)]
    # conv_b reads conv_a's 8 channels; logits reads conv_b's 6 (chain order = channel index)
    inputs = np.random.default_rng(1).random((2, 8, 8, 8), dtype=np.float32)
    np.testing.assert_allclose(gates(inputs, site="conv_b"), inputs * probabilities[0], rtol=1e-5)
    features = np.ones((2, 6), dtype=np.float32)
    np.testing.assert_allclose(gates(features, site="logits"), features * probabilities[1], rtol=1e-5)
    expected = {"conv_a": probabilities[0].sum(), "conv_b": probabilities[1].sum()}
    assert dmcp.expected_widths() == pytest.approx(expected, rel=1e-5)


@needs_float64
def test_penalty_is_the_closed_form_and_its_gradient_matches_finite_differences():
    model = _small_model()
    dmcp = DMCP(model, target=0.5, strength=3.0, logit_scale=1.0)
    penalty = dmcp.gates.penalty
    logits = keras.Variable(np.random.default_rng(0).normal(2.0, 1.0, dmcp.gates.transition_logits.shape), dtype="float64")
    widths = [float(expected_width(_chain(dmcp.gates, group, logits.numpy()))) for group in range(2)]
    # hand MAC count at expected widths a (conv_a) and b (conv_b): 64*27*a + 64*a*b + 4*b of 16920
    a, b = widths
    macs = 64 * 27 * a + 64 * a * b + 4 * b
    np.testing.assert_allclose(float(penalty(logits)), 3.0 * (macs / (0.5 * 16920) - 1) ** 2, rtol=1e-9)
    (gradient,) = gradients(lambda: penalty(logits.value), [logits])
    step = 1e-6
    for index in (0, 3, 7, 9):
        shift = np.eye(len(gradient))[index] * step
        difference = (float(penalty(keras.ops.convert_to_tensor(logits.numpy() + shift))) - float(penalty(keras.ops.convert_to_tensor(logits.numpy() - shift)))) / (2 * step)
        np.testing.assert_allclose(gradient[index], difference, rtol=1e-5)


def test_dmcp_reaches_its_target_on_a_small_model_and_leaves_it_alone():
    # wide enough that rounding the expected widths moves the MACs by a few percent at most
    model = _small_model(48, 32)
    weights = [value.copy() for value in model.get_weights()]
    dmcp = DMCP(model, target=0.4)
    history = dmcp.fit(*_small_data(), batch_size=32, epochs=8, verbose=0)
    assert history.history["expected_cost_share"] == pytest.approx(dmcp.history)
    assert dmcp.expected_cost_share() == pytest.approx(0.4, rel=0.05)
    result = dmcp.prune()
    assert result.macs_after == pytest.approx(0.4 * result.macs_before, rel=0.05)
    assert result.widths == {"conv_a": result.model.get_layer("conv_a").filters, "conv_b": result.model.get_layer("conv_b").filters}
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))
    assert not any(isinstance(layer, MarkovChannelGates) for layer in result.model.layers)


def test_pruned_model_keeps_the_trained_first_chain_channels(tmp_path):
    model = _small_model()
    dmcp = DMCP(model, target=0.5, channel_order="index")
    # a hard chain: conv_a keeps 3 channels (transitions ~1, then ~0); conv_b keeps all
    hard = np.concatenate([[50.0, 50.0, -50.0, -50.0, -50.0, -50.0, -50.0], [50.0] * 5]) / dmcp.gates.logit_scale
    dmcp.gates.transition_logits.assign(hard)
    result = dmcp.prune()
    assert result.widths == {"conv_a": 3, "conv_b": 6}
    images = _small_data(4, seed=2)[0]
    np.testing.assert_allclose(result.model(images), dmcp.model(images), atol=1e-5)
    # the gated training model round-trips through .keras
    path = str(tmp_path / "gated.keras")
    dmcp.model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_allclose(restored(images), dmcp.model(images), atol=1e-6)
    assert isinstance(restored.get_layer("dmcp_gates").penalty, ExpectedCostPenalty)


def test_dmcp_errors():
    model = _small_model()
    with pytest.raises(ValueError, match=r"`target` is the share.*Received: target=0"):
        DMCP(model, target=0)
    # width 1 everywhere: 64*27 + 64 + 4 = 1796 of 16920 MACs
    with pytest.raises(ValueError, match=r"`target`=0.001 is unreachable: .* still keep 0\.106 of the model's MACs"):
        DMCP(model, target=0.001)
    with pytest.raises(ValueError, match="`channel_order` must be one of.*Received: channel_order='random'"):
        DMCP(model, channel_order="random")
    with pytest.raises(ValueError, match="`strength` must be a positive number. Received: strength=-1"):
        DMCP(model, strength=-1)
    with pytest.raises(ValueError, match="Received: initial_keep=1.0"):
        DMCP(model, initial_keep=1.0)


@pytest.mark.slow
def test_dmcp_reaches_the_macs_target_on_digits_mobilenet_v3():
    (x, y), _, *_ = tfprune.datasets.digits(image_size=32, as_numpy=True)
    model = tfprune.models.mobilenet_v3("small", input_shape=(32, 32, 3), classes=10, seed=0)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    dmcp = DMCP(model, target=0.5)
    dmcp.fit(x, y, batch_size=64, epochs=3, verbose=0)
    result = dmcp.prune()
    assert result.macs_after == pytest.approx(0.5 * result.macs_before, rel=0.05)


def test_dmcp_expansion_targets_tie_squeeze_excite_bottlenecks_to_their_expansion():
    model = tfprune.models.mobilenet_v3("small", input_shape=(32, 32, 3), classes=10, seed=0)
    dmcp = DMCP(model, target=0.6, targets="expansion")
    assert len(dmcp.groups) == 10  # one per expansion conv
    # all transitions ~1: every channel kept, the expected cost is the whole model
    dmcp.gates.transition_logits.assign(np.full(dmcp.gates.transition_logits.shape, 30.0 / dmcp.gates.logit_scale))
    assert dmcp.expected_cost_share() == pytest.approx(1.0, rel=1e-6)
    # expanded_conv_3_expand (96 channels) at an expected width of 32 -> bottleneck 8 (MobileNetV3 rule)
    index = [group.name for group in dmcp.groups].index("expanded_conv_3_expand")
    start = sum(size - 1 for size in dmcp.gates.group_sizes[:index])
    logits = np.asarray(dmcp.gates.transition_logits).copy()
    logits[start : start + 95] = np.concatenate([np.full(31, 30.0), np.full(64, -30.0)]) / dmcp.gates.logit_scale
    dmcp.gates.transition_logits.assign(logits)
    widths = dmcp.widths()
    assert widths["expanded_conv_3_expand"] == 32
    assert widths["expanded_conv_3_squeeze_excite_conv"] == 8
