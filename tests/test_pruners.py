"""tfprune.pruners: ChannelPruning (He et al.) and DropNet (Tan & Motani)."""

import keras
import numpy as np
import pytest

import tfprune
from tests.surgery_helpers import assert_same_weights, weights_snapshot
from tests.test_criteria_data import _inputs, _maps_model, _positive_images, _redundant_model


def _consumer_output(model, images):
    return keras.Model(model.inputs, model.get_layer("consumer").output).predict(images, verbose=0)


def _relative_error(model, original, images):
    reference = _consumer_output(original, images)
    return np.linalg.norm(_consumer_output(model, images) - reference) / np.linalg.norm(reference)


def test_channel_pruning_reconstructs_the_consumer_output_random_does_not():
    model = _redundant_model()
    snapshot = weights_snapshot(model)
    train, test = _inputs(64, seed=1), _inputs(32, seed=2)
    pruner = tfprune.pruners.ChannelPruning(rate=0.5, targets=lambda group: group.name == "expand")
    small, result = pruner.prune(model, train)
    assert result.widths_after == {"expand": 4}
    assert small.get_layer("consumer").get_weights()[0].shape == (3, 3, 4, 5)
    refit_error = _relative_error(small, model, test)
    no_refit, _ = tfprune.pruners.ChannelPruning(
        rate=0.5, targets=lambda group: group.name == "expand", refit=False, verbose=0
    ).prune(model, train)
    random, _ = tfprune.prune(
        model,
        "random",
        rate=0.5,
        scope="group",
        targets=lambda group: group.name == "expand",
        seed=0,
        round_to=1,
    )
    random_error = _relative_error(random, model, test)
    # Measured (seed 0): refit 1.7e-07, LASSO selection without refit 0.50, random
    # selection without refit 0.50 (relative Frobenius error of the consumer output).
    assert refit_error < 1e-3
    assert random_error > 0.3
    assert refit_error < 0.5 * _relative_error(no_refit, model, test)
    assert_same_weights(model, snapshot)


def _vgg_like():
    inputs = keras.Input((12, 12, 3))
    x = inputs
    for index, filters in enumerate((8, 12)):
        x = keras.layers.Conv2D(filters, 3, padding="same", name=f"conv{index}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{index}")(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu", name="fc")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))


def _resnet_like():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    shortcut = keras.layers.ReLU()(keras.layers.BatchNormalization(name="stem_bn")(x))
    x = keras.layers.Conv2D(6, 3, padding="same", name="block_conv1")(shortcut)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="block_bn1")(x))
    x = keras.layers.Conv2D(8, 3, padding="same", name="block_conv2")(x)
    x = keras.layers.BatchNormalization(name="block_bn2")(x)
    x = keras.layers.ReLU()(keras.layers.Add()([x, shortcut]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))


@pytest.mark.parametrize("build", [_vgg_like, _resnet_like])
def test_channel_pruning_on_vgg_and_resnet_beats_no_refit(build):
    model = build()
    images = np.random.default_rng(0).uniform(size=(48,) + model.input_shape[1:]).astype("float32")
    snapshot = weights_snapshot(model)
    reference = model.predict(images, verbose=0)
    small, result = tfprune.pruners.ChannelPruning(rate=0.5, verbose=0).prune(model, images)
    no_refit, _ = tfprune.pruners.ChannelPruning(rate=0.5, refit=False, verbose=0).prune(
        model, images
    )
    assert all(group.after == group.before - group.before // 2 for group in result.groups)
    assert result.params_after < result.params_before
    error = np.linalg.norm(small.predict(images, verbose=0) - reference)
    assert error < np.linalg.norm(no_refit.predict(images, verbose=0) - reference)
    assert_same_weights(model, snapshot)


def test_channel_pruning_model_round_trips_through_keras_file(tmp_path):
    model = _redundant_model()
    small, _ = tfprune.pruners.ChannelPruning(rate=0.5, verbose=0).prune(model, _inputs())
    path = tmp_path / "small.keras"
    small.save(path)
    images = _inputs(8, seed=3)
    np.testing.assert_allclose(
        keras.models.load_model(path).predict(images, verbose=0),
        small.predict(images, verbose=0),
        atol=1e-6,
    )


def test_channel_pruning_arguments_and_data_are_checked():
    with pytest.raises(ValueError, match=r"Received: rate=1.5"):
        tfprune.pruners.ChannelPruning(rate=1.5)
    with pytest.raises(ValueError, match=r"Received: positions_per_example=0"):
        tfprune.pruners.ChannelPruning(positions_per_example=0)
    with pytest.raises(ValueError, match="`data` is empty"):
        tfprune.pruners.ChannelPruning(verbose=0).prune(_redundant_model(), np.zeros((0, 6, 6, 4)))


def test_dropnet_step_removes_the_dead_channel():
    model = _maps_model()
    snapshot = weights_snapshot(model)
    pruner = tfprune.pruners.DropNet(rate=0.34, scope="group", targets=lambda group: group.name == "maps")
    small, result = pruner.step(model, _positive_images())
    assert result.widths_after == {"maps": 2} and pruner.results == [result]
    np.testing.assert_array_equal(small.get_layer("maps").get_weights()[0].reshape(-1), [0.0, 1.0])
    assert_same_weights(model, snapshot)


def _compiled_vgg():
    model = _vgg_like()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_dropnet_fit_prunes_the_remaining_channels_each_round_and_trains():
    model = _compiled_vgg()
    images = np.random.default_rng(0).uniform(size=(32, 12, 12, 3)).astype("float32")
    labels = np.arange(32) % 4
    pruner = tfprune.pruners.DropNet(rate=0.25, scope="group")
    small = pruner.fit(model, images, labels, rounds=2, epochs=1, batch_size=16, verbose=0)
    # conv0: 8 -> 6 -> 6 - floor(1.5) = 5; conv1: 12 -> 9 -> 9 - floor(2.25) = 7 (never more than the fraction)
    assert [result.widths_after["conv0"] for result in pruner.results] == [6, 5]
    assert [result.widths_after["conv1"] for result in pruner.results] == [9, 7]
    assert small.get_layer("conv0").filters == 5
    assert len(pruner.histories) == 2 and all(len(h.history["loss"]) == 1 for h in pruner.histories)
    assert (
        small.compiled and small.get_compile_config()["loss"] == "sparse_categorical_crossentropy"
    )


def test_dropnet_reinitialize_gives_fresh_weights():
    model = _compiled_vgg()
    images = np.random.default_rng(0).uniform(size=(16, 12, 12, 3)).astype("float32")
    kept, _ = tfprune.pruners.DropNet(0.5, scope="group").step(model, images)
    fresh, result = tfprune.pruners.DropNet(0.5, scope="group", reinitialize=True).step(
        model, images
    )
    assert result.reinitialized
    assert fresh.get_layer("fc").kernel.shape == kept.get_layer("fc").kernel.shape
    assert not np.allclose(
        fresh.get_layer("fc").kernel.numpy(), kept.get_layer("fc").kernel.numpy()
    )


def test_dropnet_fraction_is_a_deprecated_alias_of_rate():
    model = _maps_model()
    only_maps = lambda group: group.name == "maps"  # noqa: E731
    with pytest.warns(DeprecationWarning, match=r"`tfprune.pruners.DropNet\(fraction=...\)` is deprecated; use `rate=...`") as caught:
        old = tfprune.pruners.DropNet(fraction=0.34, scope="group", targets=only_maps)
    assert caught[0].filename == __file__  # points at the caller's line
    new = tfprune.pruners.DropNet(rate=0.34, scope="group", targets=only_maps)
    assert old.rate == new.rate == 0.34
    (old_small, old_result), (small, result) = old.step(model, _positive_images()), new.step(model, _positive_images())
    assert old_result.widths_after == result.widths_after == {"maps": 2}
    np.testing.assert_array_equal(old_small.get_layer("maps").get_weights()[0], small.get_layer("maps").get_weights()[0])
    with pytest.raises(TypeError, match=r"got both `rate` and its old name `fraction`"):
        tfprune.pruners.DropNet(rate=0.3, fraction=0.34)


def test_dropnet_errors():
    with pytest.raises(ValueError, match=r"`rate` must be a number in \[0, 1\).*Received: rate=1.5"):
        tfprune.pruners.DropNet(rate=1.5)
    with pytest.raises(ValueError, match="not compiled"):
        tfprune.pruners.DropNet().fit(_vgg_like(), np.zeros((4, 12, 12, 3)), np.zeros(4), epochs=1)
    with pytest.raises(ValueError, match=r"Received: rounds=0"):
        tfprune.pruners.DropNet().fit(_compiled_vgg(), np.zeros((4, 12, 12, 3)), rounds=0)


@pytest.mark.slow
def test_all_data_driven_methods_on_mobilenet_v3_small():
    (images, _), _ = tfprune.datasets.digits(image_size=32, as_numpy=True)
    images = images[:64]
    model = tfprune.models.mobilenet_v3("small", input_shape=(32, 32, 3), seed=0)
    snapshot = weights_snapshot(model)
    for criterion in ("hrank", "activation", "reconstruction"):
        small, result = tfprune.prune(
            model, criterion, rate=0.5, scope="group", targets="expansion", data=images
        )
        assert result.params_after < result.params_before and not result.skipped
        assert small.predict(images[:4], verbose=0).shape == (4, 10)
    small, result = tfprune.pruners.ChannelPruning(
        rate=0.5, targets="expansion", num_batches=1, verbose=0
    ).prune(model, images)
    assert all(group.after == group.before // 2 for group in result.groups)
    assert small.predict(images[:4], verbose=0).shape == (4, 10)
    assert_same_weights(model, snapshot)


def _ranks(features):
    return np.linalg.matrix_rank(np.moveaxis(features, -1, 1)).mean(axis=0)


def test_hrank_averages_the_producers_of_a_residual_group_and_skips_dense_groups():
    model = _resnet_like()
    # Rank-1 images give the stem maps ranks 2.5..8 while the block maps are full
    # rank (8): the mean differs from either producer alone.
    rows = np.random.default_rng(0).uniform(size=(6, 8, 1, 3))
    images = (rows * np.random.default_rng(1).uniform(size=(6, 1, 8, 3))).astype("float32")
    graph = tfprune.graph.build(model)
    scores = tfprune.criteria.hrank(model, graph, data=images, verbose=0)
    stem_relu = model.get_layer("block_conv1").input  # stem -> BN -> ReLU, read twice
    block_bn = model.get_layer("block_bn2").output  # block_conv2 -> BN, read by the Add
    stem_features, block_features = keras.Model(model.inputs, [stem_relu, block_bn]).predict(
        images, verbose=0
    )
    np.testing.assert_allclose(
        scores["stem"], (_ranks(stem_features) + _ranks(block_features)) / 2, rtol=1e-6
    )
    vgg = _vgg_like()
    vgg_images = np.random.default_rng(0).uniform(size=(4, 12, 12, 3)).astype("float32")
    vgg_graph = tfprune.graph.build(vgg)
    assert "fc" not in tfprune.criteria.hrank(vgg, vgg_graph, data=vgg_images, verbose=0)
    assert "fc" in tfprune.criteria.activation(vgg, vgg_graph, data=vgg_images)
