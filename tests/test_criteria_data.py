"""Data-driven criteria: hrank, activation (DropNet), reconstruction (He et al.)."""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tests.surgery_helpers import assert_same_weights, weights_snapshot
from tfprune import graph as graph_module

reconstruction_module = sys.modules["tfprune.criteria.reconstruction"]

# conv "maps" (8x8x1 -> 3 channels, 1x1 kernel, then ReLU):
#   channel 0 = relu(0 * x + 1) = 1 everywhere      -> rank 1, mean 1
#   channel 1 = relu(x), x > 0                        -> full rank 8, mean = mean(x)
#   channel 2 = relu(-x + 0) = 0                      -> rank 0, mean 0
MAPS_KERNEL = np.array([[[[0.0, 1.0, -1.0]]]])
MAPS_BIAS = np.array([1.0, 0.0, 0.0])


def _maps_model():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(3, 1, name="maps")(inputs)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(2, 3, padding="same", name="next")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="logits")(x))
    model.get_layer("maps").set_weights([MAPS_KERNEL, MAPS_BIAS])
    return model


def _positive_images(count=20, seed=0):
    return np.random.default_rng(seed).uniform(0.1, 1.0, (count, 8, 8, 1)).astype("float32")


def _scores(name, model, data, **kwargs):
    return tfprune.criteria.get(name)(model, graph_module.build(model), data=data, **kwargs)


def test_hrank_matches_the_ranks_of_the_feature_maps():
    images = _positive_images()
    scores = _scores("hrank", _maps_model(), images, verbose=0)
    # Closed form: ranks 1 (constant), 8 (a random positive image), 0 (zero map).
    np.testing.assert_array_equal(scores["maps"], [1.0, 8.0, 0.0])
    # "next" feeds the model output through pooling: scored from its own maps.
    expected = np.mean(
        [[np.linalg.matrix_rank(m) for m in np.moveaxis(f, -1, 0)] for f in _next_features(images)],
        0,
    )
    np.testing.assert_allclose(scores["next"], expected)


def _next_features(images):
    model = _maps_model()
    return keras.Model(model.inputs, model.get_layer("next").output).predict(images, verbose=0)


def test_hrank_ranks_low_rank_channel_lowest_and_prune_removes_it():
    images = _positive_images()
    model = _maps_model()
    small, result = tfprune.prune(model, "hrank", rate=0.34, scope="group", data=images, round_to=1)
    assert result.widths_after["maps"] == 2
    kept = small.get_layer("maps").get_weights()[0].reshape(-1)
    np.testing.assert_array_equal(kept, [0.0, 1.0])  # the zero map (rank 0) went


def test_hrank_shows_a_progress_bar(capsys):
    _scores("hrank", _maps_model(), _positive_images(10), batch_size=5, verbose=1)
    assert "2/2" in capsys.readouterr().out


def test_activation_is_the_mean_post_relu_value_and_dead_channel_is_lowest():
    images = _positive_images()
    scores = _scores("activation", _maps_model(), images)
    expected = np.maximum(images * MAPS_KERNEL.reshape(3) + MAPS_BIAS, 0).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(scores["maps"], expected, rtol=1e-6)
    assert np.argmin(scores["maps"]) == 2 and scores["maps"][2] == 0.0


class _Batches(keras.utils.PyDataset):
    def __init__(self, images, labels, batch_size):
        super().__init__()
        self.images, self.labels, self.batch_size = images, labels, batch_size

    def __len__(self):
        return len(self.images) // self.batch_size

    def __getitem__(self, index):
        window = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.images[window], self.labels[window]


def test_data_as_dataset_tuple_array_pydataset_or_generator_gives_the_same_scores():
    images = _positive_images(24)
    labels = np.zeros(24, "int32")
    model = _maps_model()
    from_array = _scores("activation", model, images, batch_size=8)
    from_tuple = _scores("activation", model, (images, labels), batch_size=8)
    from_dataset = _scores(
        "activation", model, tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    )
    from_pydataset = _scores("activation", model, _Batches(images, labels, 8))
    from_generator = _scores("activation", model, ((images[i : i + 8], labels[i : i + 8]) for i in range(0, 24, 8)))
    # What fit also takes: no labels, labels by output name, sample weights of None.
    odd_tuples = [_scores("activation", model, data, batch_size=8)
                  for data in ((images, None), (images, {"maps": labels}), (images, labels, None), [images])]  # fmt: skip
    for other in (from_tuple, from_dataset, from_pydataset, from_generator, *odd_tuples):
        for name in from_array:
            np.testing.assert_allclose(other[name], from_array[name], rtol=1e-6)


def test_num_batches_limits_the_data():
    images = _positive_images(20)
    images[10:] = 0.0  # the second batch only: channel 1 is 0 there
    model = _maps_model()
    first = _scores("activation", model, images, num_batches=1, batch_size=10)
    np.testing.assert_allclose(first["maps"][1], images[:10].mean(), rtol=1e-6)
    labels = np.zeros(20, "int32")
    for data in (_Batches(images, labels, 10), iter([images[:10], images[10:]])):
        first = _scores("activation", model, data, num_batches=1)
        np.testing.assert_allclose(first["maps"][1], images[:10].mean(), rtol=1e-6)


@pytest.mark.parametrize("name", ["hrank", "activation", "reconstruction"])
def test_bad_data_fails_with_one_clear_sentence(name):
    model = _maps_model()
    with pytest.raises(ValueError, match="needs data.*Received: data=None"):
        _scores(name, model, None)
    with pytest.raises(ValueError, match="`data` is empty"):
        _scores(name, model, np.zeros((0, 8, 8, 1), "float32"))
    with pytest.raises(ValueError, match="`data` is empty"):
        _scores(name, model, tf.data.Dataset.from_tensor_slices(np.zeros((0, 8, 8, 1))).batch(4))
    with pytest.raises(ValueError, match=r"shape \(None, 8, 8, 1\).*batch of shape \(4, 5, 5, 1\)"):
        _scores(name, model, np.zeros((4, 5, 5, 1), "float32"))
    with pytest.raises(ValueError, match=r"has a batch of shape \(8, 8, 1\).*batch"):
        _scores(name, model, tf.data.Dataset.from_tensor_slices(np.zeros((4, 8, 8, 1))))
    with pytest.raises(ValueError, match="`data` is empty"):
        _scores(name, model, iter([]))
    with pytest.raises(TypeError, match="Received: data of type str"):
        _scores(name, model, "images/")


def test_criteria_do_not_change_the_model():
    model = _maps_model()
    snapshot = weights_snapshot(model)
    for name in ("hrank", "activation", "reconstruction"):
        _scores(name, model, _positive_images(), **({"verbose": 0} if name == "hrank" else {}))
    assert_same_weights(model, snapshot)


def _conv_model(strides=2, padding="same"):
    inputs = keras.Input((7, 7, 3))
    x = keras.layers.Conv2D(4, 3, strides=strides, padding=padding, name="conv")(inputs)
    return keras.Model(inputs, x)


@pytest.mark.parametrize("strides,padding", [(1, "same"), (2, "same"), (2, "valid")])
def test_sampled_patches_times_kernel_are_the_conv_outputs(strides, padding):
    model = _conv_model(strides, padding)
    images = np.random.default_rng(0).normal(size=(2, 7, 7, 3)).astype("float32")
    ((layer, _, rows),) = reconstruction_module.sampled_inputs(model, ["conv"], [images], 0, 1000)
    outputs = model.predict(images, verbose=0).reshape(-1, 4)
    layer_weights = layer.get_weights()
    np.testing.assert_allclose(
        rows @ layer_weights[0].reshape(-1, 4) + layer_weights[1], outputs, atol=1e-5
    )


def test_lasso_ranking_top_k_is_the_support_of_sklearn_lasso():
    from sklearn.linear_model import Lasso

    generator = np.random.default_rng(0)
    design = generator.normal(size=(200, 8))
    target = design @ np.array([3.0, 0, -2.0, 0, 1.0, 0, 0.5, 0]) + 0.1 * generator.normal(size=200)
    scores = reconstruction_module.lasso_ranking(design.T @ design, design.T @ target)
    ranking = np.argsort(-scores)
    for alpha in np.geomspace(5.0, 1e-3, 40):
        support = np.flatnonzero(Lasso(alpha=alpha, fit_intercept=False).fit(design, target).coef_)
        assert set(support) == set(ranking[: len(support)]), alpha
    assert sorted(ranking[:4]) == [0, 2, 4, 6]


def _redundant_model(noise=0.01, seed=0):
    """expand (linear, 8 channels) -> consumer 3x3 conv -> pooling -> logits.

    Channels 4..7 of "expand" are 2 x channels 0..3, and the consumer reads
    them with about half the weights (plus `noise`): each pair contributes
    nearly the same output, so half the channels are redundant. Keeping one
    of each pair and refitting the consumer reconstructs its output exactly.
    """
    generator = np.random.default_rng(seed)
    inputs = keras.Input((6, 6, 4))
    x = keras.layers.Conv2D(8, 1, use_bias=False, name="expand")(inputs)
    x = keras.layers.Conv2D(5, 3, padding="same", name="consumer")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
    base = generator.normal(size=(4, 4))
    model.get_layer("expand").set_weights([np.concatenate([base, 2 * base], 1).reshape(1, 1, 4, 8)])
    consumer = generator.normal(size=(3, 3, 4, 5))
    consumer = np.concatenate(
        [consumer, 0.5 * consumer + noise * generator.normal(size=consumer.shape)], 2
    )
    model.get_layer("consumer").set_weights([consumer, generator.normal(size=5)])
    return model


def _inputs(count=64, seed=1):
    return np.random.default_rng(seed).normal(size=(count, 6, 6, 4)).astype("float32")


def test_reconstruction_criterion_keeps_one_channel_of_each_redundant_pair():
    model = _redundant_model()
    scores = _scores("reconstruction", model, _inputs())
    kept = np.sort(np.argsort(-scores["expand"])[:4]) % 4
    assert sorted(kept) == [0, 1, 2, 3]
