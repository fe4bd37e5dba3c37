"""Tests for prune_low_magnitude, the PruneLowMagnitude wrapper and UpdatePruningStep."""

import glob
import os

import keras
import numpy as np
import pytest
from backend_gradients import gradients

import tfprune
from tfprune.magnitude import PruneLowMagnitude, pruning_wrappers


def small_cnn():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(16, activation="relu", name="hidden")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs)


def digits_batch(count=64, seed=0):
    random = np.random.default_rng(seed)
    return random.random((count, 8, 8, 1), dtype="float32"), random.integers(0, 10, count)


def compiled(model, optimizer=None):
    model.compile(
        optimizer or keras.optimizers.SGD(0.05, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def kernels_and_masks(model):
    return {
        wrapper.name: (
            keras.ops.convert_to_numpy(wrapper.layer.kernel.value).copy(),
            keras.ops.convert_to_numpy(wrapper.masks[0].value).copy(),
        )
        for wrapper in pruning_wrappers(model)
    }


class _Recorder(keras.callbacks.Callback):
    """Stores the kernels (placed before UpdatePruningStep) or masks (after it) of every batch."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def on_train_batch_begin(self, batch, logs=None):
        self.batches.append(kernels_and_masks(self.model))


def test_masks_follow_the_schedule_and_keep_the_largest_weights():
    schedule = tfprune.PolynomialDecay(0.0, 0.8, begin_step=2, end_step=14, power=3, frequency=4)
    pruned = compiled(tfprune.prune_low_magnitude(small_cnn(), schedule=schedule))
    before, after = _Recorder(), _Recorder()
    x, y = digits_batch()
    pruned.fit(
        x, y, batch_size=8, epochs=2, shuffle=False, verbose=0,
        callbacks=[before, tfprune.callbacks.UpdatePruningStep(), after],
    )
    assert len(after.batches) == 16
    target = 0.0
    for step, (old, new) in enumerate(zip(before.batches, after.batches)):
        if schedule.should_prune(step):
            target = schedule.sparsity(step)
        for name, (kernel, _) in old.items():
            mask = new[name][1]
            assert abs(np.sum(mask == 0) - target * mask.size) <= 1, (step, name)
            if schedule.should_prune(step) and 0 < target:
                # The kept weights are the largest of the weights just before the update.
                assert np.abs(kernel[mask == 1]).min() >= np.abs(kernel[mask == 0]).max()
            elif step > 0:
                np.testing.assert_array_equal(mask, after.batches[step - 1][name][1])
    assert target == pytest.approx(0.8)
    assert all(int(wrapper.pruning_step.numpy()) == 16 for wrapper in pruning_wrappers(pruned))


def test_pruned_weights_stay_zero_with_momentum_and_adam():
    for optimizer in (keras.optimizers.SGD(0.1, momentum=0.9), keras.optimizers.Adam(0.01)):
        # Prune once, at step 3, after momentum has built up; then train on.
        schedule = tfprune.ConstantSparsity(0.6, begin_step=3, end_step=3)
        pruned = compiled(tfprune.prune_low_magnitude(small_cnn(), schedule=schedule), optimizer)
        recorder = _Recorder()
        x, y = digits_batch()
        pruned.fit(x, y, batch_size=8, epochs=2, verbose=0,
                   callbacks=[tfprune.callbacks.UpdatePruningStep(), recorder])
        final = kernels_and_masks(pruned)
        for name, (kernel, mask) in final.items():
            assert np.mean(mask == 0) == pytest.approx(0.6, abs=1 / mask.size)
            assert np.all(kernel[mask == 0] == 0.0), name
            # ... and the surviving weights did train after the pruning step.
            assert not np.allclose(kernel, recorder.batches[4][name][0])


def test_gradients_of_pruned_weights_are_masked():
    wrapper = tfprune.prune_low_magnitude(keras.layers.Dense(3), tfprune.ConstantSparsity(0.5))
    wrapper.build((None, 4))
    random = np.random.default_rng(3)
    wrapper.layer.kernel.assign(random.normal(size=(4, 3)))
    wrapper.update_pruning_step()
    mask = wrapper.masks[0].numpy()
    kernel = wrapper.layer.kernel.numpy()
    bias = wrapper.layer.bias.numpy()
    x = random.normal(size=(5, 4)).astype("float32")
    (gradient,) = gradients(lambda: keras.ops.sum(wrapper(x) ** 2), [wrapper.layer.kernel])
    # NumPy reference: d/dW sum((x (W*M) + b)^2) = x^T 2(x (W*M) + b), times M.
    outputs = x @ (kernel * mask) + bias
    np.testing.assert_allclose(gradient, (x.T @ (2 * outputs)) * mask, rtol=1e-5, atol=1e-5)
    assert np.all(gradient[mask == 0] == 0.0)


def test_keras_round_trip_mid_training_resumes_with_identical_masks(tmp_path):
    schedule = tfprune.PolynomialDecay(0.0, 0.7, begin_step=0, end_step=20, frequency=3)
    pruned = compiled(tfprune.prune_low_magnitude(small_cnn(), schedule=schedule), "adam")
    x, y = digits_batch()
    callback = tfprune.callbacks.UpdatePruningStep()
    pruned.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[callback])
    path = str(tmp_path / "pruned.keras")
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    assert [type(layer).__name__ for layer in loaded.layers] == [
        type(layer).__name__ for layer in pruned.layers
    ]
    assert loaded.get_layer("conv").schedule == schedule
    for name, (kernel, mask) in kernels_and_masks(pruned).items():
        np.testing.assert_array_equal(kernels_and_masks(loaded)[name][1], mask)
        np.testing.assert_array_equal(kernels_and_masks(loaded)[name][0], kernel)
        assert int(loaded.get_layer(name).pruning_step.numpy()) == 8
    np.testing.assert_allclose(loaded.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-6)
    # Both continue for 2 more epochs (pruning at steps 9..20): identical masks and weights.
    for model in (pruned, loaded):
        model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0,
                  callbacks=[tfprune.callbacks.UpdatePruningStep()])
    resumed, uninterrupted = kernels_and_masks(loaded), kernels_and_masks(pruned)
    for name, (kernel, mask) in uninterrupted.items():
        np.testing.assert_array_equal(resumed[name][1], mask)
        np.testing.assert_allclose(resumed[name][0], kernel, atol=1e-5)
        assert np.mean(mask == 0) == pytest.approx(0.7, abs=1 / mask.size)


def test_input_model_is_unchanged():
    model = small_cnn()
    weights = [weight.copy() for weight in model.get_weights()]
    pruned = compiled(tfprune.prune_low_magnitude(model, tfprune.ConstantSparsity(0.9, frequency=1)))
    pruned.fit(*digits_batch(16), batch_size=8, verbose=0, callbacks=[tfprune.callbacks.UpdatePruningStep()])
    assert tfprune.magnitude.mask_sparsity(pruned) > 0.85
    assert [type(layer).__name__ for layer in model.layers].count("PruneLowMagnitude") == 0
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    # The wrapped copy starts from the same weights.
    fresh = tfprune.prune_low_magnitude(model, tfprune.ConstantSparsity(0.5))
    np.testing.assert_array_equal(fresh.get_layer("hidden").layer.kernel.numpy(), weights[2])


def test_strip_bakes_the_zeros_into_plain_layers():
    model = small_cnn()
    pruned = tfprune.prune_low_magnitude(model, tfprune.ConstantSparsity(0.5), skip=("logits",))
    tfprune.magnitude.update_pruning_step(pruned)
    plain = tfprune.strip(pruned)
    assert [type(layer).__name__ for layer in plain.layers] == [
        "InputLayer", "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dense"
    ]
    assert [layer.name for layer in plain.layers] == [layer.name for layer in model.layers]
    x, _ = digits_batch(8)
    np.testing.assert_allclose(plain.predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-6)
    assert np.mean(plain.get_layer("conv").kernel.numpy() == 0) == pytest.approx(0.5, abs=1 / 72)
    assert np.all(plain.get_layer("logits").kernel.numpy() != 0)


def test_sequential_models_and_every_registered_layer_type():
    model = keras.Sequential(
        [
            keras.Input((6,), dtype="int32"),
            keras.layers.Embedding(20, 8, name="embedding"),
            keras.layers.Conv1D(8, 3, name="conv1d"),
            keras.layers.Reshape((4, 8, 1)),
            keras.layers.DepthwiseConv2D(3, padding="same", name="depthwise"),
            keras.layers.SeparableConv2D(8, 3, padding="same", name="separable"),
            keras.layers.Flatten(),
            keras.layers.Dense(3, name="dense"),
        ]
    )
    pruned = tfprune.prune_low_magnitude(model, tfprune.ConstantSparsity(0.5))
    assert isinstance(pruned, keras.Sequential)
    wrapped = {wrapper.name: wrapper for wrapper in pruning_wrappers(pruned)}
    assert sorted(wrapped) == ["conv1d", "dense", "depthwise", "embedding", "separable"]
    separable = wrapped["separable"]
    depthwise_before = separable.layer.depthwise_kernel.numpy().copy()
    tfprune.magnitude.update_pruning_step(pruned)
    # Only the pointwise kernel of a separable convolution is pruned.
    assert [mask.shape for mask in separable.masks] == [separable.layer.pointwise_kernel.shape]
    np.testing.assert_array_equal(separable.layer.depthwise_kernel.numpy(), depthwise_before)
    for wrapper in wrapped.values():
        assert np.mean(wrapper.masks[0].numpy() == 0) == pytest.approx(0.5, abs=1 / wrapper.masks[0].numpy().size)
    tokens = np.random.default_rng(0).integers(0, 20, (4, 6))
    np.testing.assert_allclose(
        tfprune.strip(pruned).predict(tokens, verbose=0), pruned.predict(tokens, verbose=0), atol=1e-5
    )


@keras.saving.register_keras_serializable(package="tfprune_tests")
class ScaledDense(keras.layers.Layer):
    """A user layer that declares its prunable weight."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.matrix = self.add_weight(shape=(input_shape[-1], self.units), name="matrix")
        self.scale = self.add_weight(shape=(), initializer="ones", name="scale")

    def call(self, inputs):
        return self.scale * keras.ops.matmul(inputs, self.matrix)

    def get_prunable_weights(self):
        return [self.matrix]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_user_layers_declare_prunable_weights(tmp_path):
    inputs = keras.Input((12,))
    model = keras.Model(inputs, ScaledDense(4, name="custom")(inputs))
    pruned = tfprune.prune_low_magnitude(model, tfprune.ConstantSparsity(0.75), m_by_n=None)
    tfprune.magnitude.update_pruning_step(pruned)
    wrapper = pruned.get_layer("custom")
    assert np.sum(wrapper.masks[0].numpy() == 0) == 36
    assert wrapper.layer.scale.numpy() == 1.0  # not a prunable weight: untouched
    path = str(tmp_path / "custom.keras")
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.get_layer("custom").masks[0].numpy(), wrapper.masks[0].numpy())
    two_of_four = tfprune.prune_low_magnitude(model, tfprune.ConstantSparsity(0.5), m_by_n=(2, 4))
    tfprune.magnitude.update_pruning_step(two_of_four)
    assert tfprune.check_m_by_n(two_of_four) == {"custom": {"runs": 12, "violations": 0, "ok": True}}


def test_m_by_n_on_conv2d_and_dense_is_verified_by_the_checker():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(x)
    x = keras.layers.Dense(16, activation="relu", name="hidden")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))
    dense_results = tfprune.check_m_by_n(model, 2, 4)
    # conv2: 9 positions x 8 filters x 2 runs of its 8 inputs; hidden: 128 inputs = 32 runs x 16.
    assert dense_results["conv2"] == {"runs": 144, "violations": 144, "ok": False}
    assert dense_results["hidden"] == {"runs": 512, "violations": 512, "ok": False}
    assert dense_results["conv"]["ok"]  # one input channel: every run holds a single weight
    pruned = compiled(tfprune.prune_low_magnitude(
        model, tfprune.ConstantSparsity(0.0, begin_step=0, frequency=4), m_by_n=(2, 4)))
    pruned.fit(*digits_batch(), batch_size=8, verbose=0, callbacks=[tfprune.callbacks.UpdatePruningStep()])
    results = tfprune.check_m_by_n(pruned, 2, 4)
    assert results["conv2"] == {"runs": 144, "violations": 0, "ok": True}
    assert results["hidden"] == {"runs": 512, "violations": 0, "ok": True}
    assert set(results) == {"conv", "conv2", "hidden", "logits"}
    assert all(result["ok"] for result in results.values())
    conv_mask = pruned.get_layer("conv2").masks[0].numpy()
    assert np.all(conv_mask.reshape(3, 3, 2, 4, 8).sum(axis=3) == 2)
    hidden_mask = pruned.get_layer("hidden").masks[0].numpy()
    assert np.all(hidden_mask.reshape(32, 4, 16).sum(axis=1) == 2)
    plain = tfprune.strip(pruned)
    assert all(result["ok"] for result in tfprune.check_m_by_n(plain, 2, 4).values())
    assert not tfprune.check_m_by_n(plain, 1, 4)["conv2"]["ok"]


def test_m_by_n_leaves_layers_without_input_channels_dense():
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.DepthwiseConv2D(3, name="depthwise")(inputs)
    outputs = keras.layers.Conv2D(4, 1, name="pointwise")(x)
    pruned = tfprune.prune_low_magnitude(keras.Model(inputs, outputs), tfprune.ConstantSparsity(0.5), m_by_n=(2, 4))
    assert [wrapper.name for wrapper in pruning_wrappers(pruned)] == ["pointwise"]
    with pytest.raises(TypeError, match=r"'depthwise' \(DepthwiseConv2D\) cannot be pruned with m_by_n=\(2, 4\)"):
        PruneLowMagnitude(keras.layers.DepthwiseConv2D(3, name="depthwise"), tfprune.ConstantSparsity(0.5), m_by_n=(2, 4))


def test_block_sparsity_on_dense_kernels():
    inputs = keras.Input((16,))
    model = keras.Model(inputs, keras.layers.Dense(8, name="dense")(inputs))
    pruned = tfprune.prune_low_magnitude(model, tfprune.ConstantSparsity(0.5), block_size=(4, 2), block_pooling="max")
    tfprune.magnitude.update_pruning_step(pruned)
    wrapper = pruned.get_layer("dense")
    tiles = wrapper.masks[0].numpy().reshape(4, 4, 4, 2)
    assert np.all(tiles == tiles[:, :1, :, :1])
    assert np.sum(tiles[:, 0, :, 0] == 0) == 8
    kernel = model.get_layer("dense").kernel.numpy().reshape(4, 4, 4, 2)
    scores = np.abs(kernel).max(axis=(1, 3))
    assert scores[tiles[:, 0, :, 0] == 1].min() >= scores[tiles[:, 0, :, 0] == 0].max()
    restored = keras.layers.deserialize(keras.layers.serialize(wrapper))
    assert (restored.block_size, restored.block_pooling, restored.m_by_n) == ((4, 2), "max", None)
    assert restored.get_config() == wrapper.get_config()


def test_callback_logs_sparsity_and_writes_tensorboard_summaries(tmp_path):
    tf = pytest.importorskip("tensorflow")  # reads the event files back (the tensorflow extra)

    pruned = compiled(tfprune.prune_low_magnitude(small_cnn(), tfprune.ConstantSparsity(0.5, frequency=2)))
    history = pruned.fit(*digits_batch(32), batch_size=8, epochs=2, verbose=0,
                         callbacks=[tfprune.callbacks.UpdatePruningStep(log_dir=str(tmp_path))])
    assert history.history["pruning_sparsity"] == pytest.approx([0.5, 0.5], abs=1e-3)
    tags = {}
    for path in glob.glob(os.path.join(tmp_path, "pruning", "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append(
                    (event.step, float(tf.make_ndarray(value.tensor)))
                )
    assert tags["pruning/sparsity"][-1] == (8, pytest.approx(0.5, abs=1e-3))
    assert tags["pruning/conv/sparsity"][-1][1] == pytest.approx(0.5, abs=1 / 72)
    assert tags["pruning/hidden/target_sparsity"][-1][1] == pytest.approx(0.5)


def test_steps_per_execution_advances_the_counter_by_every_step():
    pruned = tfprune.prune_low_magnitude(small_cnn(), tfprune.ConstantSparsity(0.5, begin_step=4, frequency=100))
    pruned.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True), steps_per_execution=4)
    pruned.fit(*digits_batch(64), batch_size=8, epochs=1, verbose=0,
               callbacks=[tfprune.callbacks.UpdatePruningStep()])
    assert [int(wrapper.pruning_step.numpy()) for wrapper in pruning_wrappers(pruned)] == [8, 8, 8]
    assert tfprune.magnitude.mask_sparsity(pruned) == pytest.approx(0.5, abs=0.01)


def test_custom_training_loop_with_update_pruning_step():
    pruned = tfprune.prune_low_magnitude(small_cnn(), tfprune.PolynomialDecay(0.0, 0.5, 0, 2, power=1, frequency=1))
    assert [tfprune.magnitude.update_pruning_step(pruned) for _ in range(3)] == [0, 1, 2]
    assert tfprune.magnitude.mask_sparsity(pruned, by_layer=True)["hidden"] == pytest.approx(0.5)
    assert tfprune.magnitude.update_pruning_step(pruned, step=10) == 10
    assert int(pruned.get_layer("conv").pruning_step.numpy()) == 11


def test_wrapping_a_layer_copies_it():
    dense = keras.layers.Dense(3)
    dense.build((None, 5))
    kernel = dense.kernel.numpy().copy()
    wrapper = tfprune.prune_low_magnitude(dense, tfprune.ConstantSparsity(0.8))
    assert isinstance(wrapper, PruneLowMagnitude) and wrapper.built and wrapper.layer is not dense
    wrapper.update_pruning_step()
    np.testing.assert_array_equal(dense.kernel.numpy(), kernel)
    assert np.sum(wrapper.layer.kernel.numpy() == 0) == 12


def test_mixed_precision_forward_matches_the_stripped_model():
    keras.config.set_dtype_policy("mixed_float16")
    pruned = tfprune.prune_low_magnitude(small_cnn(), tfprune.ConstantSparsity(0.5))
    tfprune.magnitude.update_pruning_step(pruned)
    wrapper = pruned.get_layer("hidden")
    assert wrapper.masks[0].dtype == "float32" and wrapper.compute_dtype == "float16"
    x, _ = digits_batch(8)
    np.testing.assert_allclose(
        tfprune.strip(pruned).predict(x, verbose=0), pruned.predict(x, verbose=0), atol=1e-2
    )


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, inputs):
        return self.dense(inputs)


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        (dict(schedule=0.5), TypeError, r"tfprune pruning schedule.*Received: schedule=0\.5"),
        (dict(m_by_n=(4, 2)), ValueError, r"m must not exceed n.*Received: m_by_n=\(4, 2\)"),
        (dict(m_by_n=(2,)), ValueError, r"two positive ints.*Received: m_by_n=\(2,\)"),
        (dict(m_by_n=(2, 4), block_size=(1, 4)), ValueError, r"only one of them.*block_size=\(1, 4\)"),
        (dict(block_size=(0, 2)), ValueError, r"Received: block_size=\(0, 2\)"),
        (dict(block_pooling="sum"), ValueError, r"Received: block_pooling='sum'"),
        (dict(skip=("hiden",)), ValueError, r"does not have.*unknown: \['hiden'\]"),
        (dict(skip=3), TypeError, r"`skip` must be.*Received: skip=3"),
        (dict(skip=keras.layers.Layer), ValueError, r"no layer left to prune"),
    ],
)
def test_bad_arguments_raise_clear_errors(arguments, error, message):
    arguments = {"schedule": tfprune.ConstantSparsity(0.5), **arguments}
    with pytest.raises(error, match=message):
        tfprune.prune_low_magnitude(small_cnn(), **arguments)


def test_refuses_subclassed_models_and_unprunable_layers():
    model = Subclassed()
    model(np.ones((1, 3)))
    with pytest.raises(TypeError, match="cannot transform subclassed model"):
        tfprune.prune_low_magnitude(model, tfprune.ConstantSparsity(0.5))
    with pytest.raises(TypeError, match=r"'re_lu' \(ReLU\) cannot be pruned"):
        tfprune.prune_low_magnitude(keras.layers.ReLU(name="re_lu"), tfprune.ConstantSparsity(0.5))
    inputs = keras.Input((3,))
    plain = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    plain.compile("sgd", "mse")
    with pytest.raises(ValueError, match="UpdatePruningStep` found no PruneLowMagnitude layer"):
        plain.fit(np.ones((2, 3)), np.ones((2, 2)), verbose=0, callbacks=[tfprune.callbacks.UpdatePruningStep()])


def test_embedding_padding_mask_passes_through_the_wrapper():
    inputs = keras.Input((4,), dtype="int32")
    x = keras.layers.Embedding(10, 4, mask_zero=True, name="embedding")(inputs)
    model = keras.Model(inputs, keras.layers.GRU(3, name="gru")(x))
    pruned = tfprune.prune_low_magnitude(model, tfprune.ConstantSparsity(0.5))
    tokens = np.array([[1, 2, 0, 0], [3, 0, 0, 0]])
    # Without the mask the GRU would also run over the padding embeddings.
    np.testing.assert_allclose(pruned.predict(tokens, verbose=0), model.predict(tokens, verbose=0), atol=1e-6)
    unmasked = keras.Model(inputs, keras.layers.GRU(3)(keras.layers.Embedding(10, 4)(inputs)))
    unmasked.set_weights(model.get_weights())
    assert not np.allclose(unmasked.predict(tokens, verbose=0), model.predict(tokens, verbose=0), atol=1e-3)


def test_tfmot_keyword_names_and_default_schedule_give_the_same_pruning():
    x, _ = digits_batch()
    model = small_cnn()
    ours = tfprune.prune_low_magnitude(model, schedule=tfprune.ConstantSparsity(0.5), block_size=(1, 2),
                                       block_pooling="max")
    theirs = tfprune.prune_low_magnitude(model, pruning_schedule=tfprune.ConstantSparsity(0.5), block_size=(1, 2),
                                         block_pooling_type="MAX")
    default = tfprune.prune_low_magnitude(model, block_size=(1, 2), block_pooling_type="MAX")  # TFMOT's default: 50%
    for pruned in (ours, theirs, default):
        tfprune.magnitude.update_pruning_step(pruned)
    masks = [kernels_and_masks(pruned) for pruned in (ours, theirs, default)]
    for name, (_, mask) in masks[0].items():
        assert np.mean(mask == 0) == pytest.approx(0.5, abs=0.02), name
        for other in masks[1:]:
            np.testing.assert_array_equal(other[name][1], mask)
    assert [wrapper.block_pooling for wrapper in pruning_wrappers(theirs)] == ["max"] * 3
    m_by_n = tfprune.prune_low_magnitude(model, sparsity_m_by_n=(2, 4))
    tfprune.magnitude.update_pruning_step(m_by_n)
    report = tfprune.magnitude.check_m_by_n(tfprune.magnitude.strip_pruning(m_by_n), 2, 4)
    assert report and all(entry["ok"] and entry["runs"] > 0 for entry in report.values()), report
    stripped = tfprune.magnitude.strip_pruning(theirs)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(stripped(x)),
                                  keras.ops.convert_to_numpy(tfprune.strip(theirs)(x)))
    assert not pruning_wrappers(stripped)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (dict(schedule=tfprune.ConstantSparsity(0.5), pruning_schedule=tfprune.ConstantSparsity(0.8)),
         r"`schedule` and `pruning_schedule` are the same argument"),
        (dict(block_pooling="max", block_pooling_type="AVG"), r"`block_pooling` and `block_pooling_type`"),
        (dict(m_by_n=(2, 4), sparsity_m_by_n=(1, 4)), r"`m_by_n` and `sparsity_m_by_n`"),
    ],
)  # fmt: skip
def test_an_argument_under_both_names_is_refused(arguments, message):
    with pytest.raises(ValueError, match=message):
        tfprune.prune_low_magnitude(small_cnn(), **arguments)


def test_training_without_the_step_callback_raises_like_tfmot():
    pruned = compiled(tfprune.prune_low_magnitude(small_cnn()))
    with pytest.raises(RuntimeError, match=r"'conv' is being trained without `tfprune.callbacks.UpdatePruningStep`"):
        pruned.fit(*digits_batch(16), batch_size=8, epochs=1, verbose=0)
    fresh = compiled(tfprune.prune_low_magnitude(small_cnn()))
    fresh.predict(digits_batch(4)[0], verbose=0)  # inference needs no callback
    fresh.fit(*digits_batch(16), batch_size=8, epochs=1, verbose=0,
              callbacks=[tfprune.callbacks.UpdatePruningStep()])
    assert tfprune.magnitude.mask_sparsity(fresh) == pytest.approx(0.5, abs=0.01)


def test_custom_loop_may_train_after_update_pruning_step():
    pruned = tfprune.prune_low_magnitude(small_cnn())
    x, _ = digits_batch(4)
    with pytest.raises(RuntimeError, match="update_pruning_step"):
        pruned(x, training=True)
    tfprune.magnitude.update_pruning_step(pruned)
    assert pruned(x, training=True).shape == (4, 10)


def test_pruning_summaries_write_every_n_batches(tmp_path):
    tf = pytest.importorskip("tensorflow")  # reads the event files back (the tensorflow extra)

    pruned = compiled(tfprune.prune_low_magnitude(small_cnn(), tfprune.ConstantSparsity(0.5, frequency=1)))
    pruned.fit(*digits_batch(32), batch_size=8, epochs=1, verbose=0, callbacks=[
        tfprune.callbacks.UpdatePruningStep(), tfprune.callbacks.PruningSummaries(tmp_path, update_freq=2)])
    steps = [event.step for path in glob.glob(os.path.join(tmp_path, "pruning", "events.*"))
             for event in tf.compat.v1.train.summary_iterator(path)
             if any(value.tag == "pruning/sparsity" for value in event.summary.value)]  # fmt: skip
    assert steps == [0, 2, 4, 4]  # at the epoch's start, after batches 2 and 4, at the end of training


@pytest.mark.parametrize("update_freq", ["steps", 0, -1, 1.5])
def test_pruning_summaries_refuse_a_bad_update_freq(update_freq, tmp_path):
    with pytest.raises(ValueError, match="`update_freq` must be 'epoch', 'batch' or a positive int"):
        tfprune.callbacks.PruningSummaries(tmp_path, update_freq=update_freq)


def test_xnnpack_policy_wraps_only_pointwise_convolutions():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, name="stem")(inputs)
    x = keras.layers.Conv2D(16, 1, name="pointwise")(x)
    x = keras.layers.Conv2D(16, 1, strides=2, name="strided")(x)
    x = keras.layers.Conv2D(16, 1, dilation_rate=2, name="dilated")(x)
    outputs = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    pruned = tfprune.prune_low_magnitude(model, pruning_policy=tfprune.magnitude.PruneForLatencyOnXNNPack())
    assert [wrapper.name for wrapper in pruning_wrappers(pruned)] == ["pointwise"]
    no_pointwise = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(model.get_layer("stem").output)))
    with pytest.raises(ValueError, match="PruneForLatencyOnXNNPack found no 1x1 Conv2D layer"):
        tfprune.prune_low_magnitude(no_pointwise, pruning_policy=tfprune.magnitude.PruneForLatencyOnXNNPack())
    with pytest.raises(TypeError, match="`pruning_policy` must be a tfprune.magnitude.PruningPolicy"):
        tfprune.prune_low_magnitude(model, pruning_policy="xnnpack")
    with pytest.raises(ValueError, match="applies to a whole model"):
        tfprune.prune_low_magnitude(keras.layers.Dense(2), pruning_policy=tfprune.magnitude.PruningPolicy())


def test_a_hand_driven_loop_may_end_batches_with_batch_minus_one():
    pruned = tfprune.prune_low_magnitude(small_cnn(), tfprune.PolynomialDecay(0.0, 0.5, 0, 2, power=1, frequency=1))
    callback = tfprune.callbacks.UpdatePruningStep()
    callback.set_model(pruned)
    callback.on_train_begin()
    for _ in range(3):
        callback.on_train_batch_begin(-1)
        callback.on_train_batch_end(-1)
    assert [int(wrapper.pruning_step.numpy()) for wrapper in pruning_wrappers(pruned)] == [3, 3, 3]
    assert tfprune.magnitude.mask_sparsity(pruned, by_layer=True)["hidden"] == pytest.approx(0.5)
