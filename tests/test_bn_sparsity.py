import glob
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfprune.callbacks import BNSparsity
from tfprune.callbacks.bn_sparsity import batch_norm_layers


def _toy_model():
    keras.utils.set_random_seed(7)
    inputs = keras.Input((5,))
    x = keras.layers.Dense(6, name="dense")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Activation("relu")(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    model = keras.Model(inputs, outputs)
    bn = model.get_layer("bn")
    # mixed-sign scales so that sign(γ) matters
    bn.gamma.assign(np.array([0.5, -0.3, 1.2, -0.8, 0.05, 2.0], dtype="float32"))
    return model


def _data(count=16):
    rng = np.random.default_rng(0)
    return rng.normal(size=(count, 5)).astype("float32"), rng.normal(size=(count, 2)).astype("float32")


def _fit(model, optimizer, callbacks, epochs=1, batch_size=16):
    model.compile(optimizer=optimizer, loss="mse")
    x, y = _data()
    model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks)
    return model.get_layer("bn").gamma.numpy()


def _manual_training(model, optimizer, l1, batches):
    """Reference: add l1*sign(γ) to γ's gradient by hand, then step the optimizer."""
    loss_function = keras.losses.MeanSquaredError()
    gamma = model.get_layer("bn").gamma
    optimizer.build(model.trainable_variables)
    for x, y in batches:
        with tf.GradientTape() as tape:
            loss = loss_function(y, model(x, training=True))
        gradients = tape.gradient(loss, model.trainable_variables)
        gradients = [
            g + l1 * tf.sign(v) if v is gamma else g
            for g, v in zip(gradients, model.trainable_variables)
        ]
        optimizer.apply(gradients, model.trainable_variables)
    return gamma.numpy()


def test_subgradient_one_sgd_step_adds_lr_times_l1_sign_gamma():
    initial = _toy_model().get_layer("bn").gamma.numpy()
    plain = _fit(_toy_model(), keras.optimizers.SGD(0.1), [])
    penalised = _fit(_toy_model(), keras.optimizers.SGD(0.1), [BNSparsity(0.05)])
    np.testing.assert_allclose(penalised - plain, -0.1 * 0.05 * np.sign(initial), atol=1e-6)


@pytest.mark.parametrize(
    "make_optimizer",
    [lambda: keras.optimizers.SGD(0.05, momentum=0.9), lambda: keras.optimizers.Adam(0.01)],
    ids=["sgd_momentum", "adam"],
)
def test_subgradient_goes_through_the_optimizer_like_a_hand_computation(make_optimizer):
    x, y = _data()
    batches = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 16, 4)]
    expected = _manual_training(_toy_model(), make_optimizer(), 0.02, batches)
    model = _toy_model()
    got = _fit(model, make_optimizer(), [BNSparsity(0.02)], batch_size=4)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # the penalty is removed once fit returns
    assert model.losses == []
    assert model.get_layer("bn").gamma.regularizer is None


def test_subgradient_keeps_an_existing_gamma_regularizer_and_restores_it():
    model = _toy_model()
    existing = keras.regularizers.L2(0.1)
    model.get_layer("bn").gamma.regularizer = existing
    _fit(model, keras.optimizers.SGD(0.1), [BNSparsity(0.05)])
    assert model.get_layer("bn").gamma.regularizer is existing


def _soft_threshold(values, threshold):
    return np.sign(values) * np.maximum(np.abs(values) - threshold, 0.0)


def test_proximal_step_soft_thresholds_by_lr_times_l1_with_exact_zeros():
    plain = _fit(_toy_model(), keras.optimizers.SGD(0.1), [])
    proximal = _fit(_toy_model(), keras.optimizers.SGD(0.1), [BNSparsity(1.0, mode="proximal")])
    np.testing.assert_allclose(proximal, _soft_threshold(plain, 0.1), atol=1e-6)
    assert np.sum(proximal == 0.0) >= 1  # |γ|=0.05 and -0.3 start below/near 0.1
    assert np.all(proximal[np.abs(plain) <= 0.1] == 0.0)


def test_warmup_schedule_and_logged_statistics():
    callback = BNSparsity(
        0.01, mode="proximal", warmup_epochs=1, schedule=lambda epoch, l1: l1 * epoch,
        thresholds=(0.1, 1.0),
    )
    model = _toy_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x, y = _data()
    history = model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[callback])
    assert history.history["bn_gamma_l1"] == pytest.approx([0.0, 0.01, 0.02])
    magnitudes = np.abs(model.get_layer("bn").gamma.numpy())
    assert history.history["bn_gamma_below_0.1"][-1] == pytest.approx(np.mean(magnitudes < 0.1))
    assert history.history["bn_gamma_below_1"][-1] == pytest.approx(np.mean(magnitudes < 1.0))
    assert history.history["bn_gamma_mean_abs"][-1] == pytest.approx(magnitudes.mean(), rel=1e-6)


def test_tensorboard_histogram_is_written(tmp_path):
    _fit(_toy_model(), keras.optimizers.SGD(0.1), [BNSparsity(0.01, log_dir=str(tmp_path))], epochs=2)
    event_files = glob.glob(os.path.join(tmp_path, "bn_sparsity", "events.out.tfevents.*"))
    assert event_files
    tags = []
    for record in tf.data.TFRecordDataset(event_files):
        event = tf.compat.v1.Event.FromString(record.numpy())
        tags += [(value.tag, event.step) for value in event.summary.value]
    assert ("bn_gamma/abs", 0) in tags and ("bn_gamma/abs", 1) in tags
    assert ("bn_gamma/bn_gamma_below_0.01", 1) in tags


def test_bad_arguments_and_models_without_batch_norm():
    with pytest.raises(ValueError, match=r"`l1` must be.*l1=-0.1"):
        BNSparsity(-0.1)
    with pytest.raises(ValueError, match=r"`mode` must be one of.*mode='adam'"):
        BNSparsity(mode="adam")
    with pytest.raises(ValueError, match=r"`warmup_epochs`.*warmup_epochs=1.5"):
        BNSparsity(warmup_epochs=1.5)
    with pytest.raises(TypeError, match=r"`schedule` must be a callable.*schedule=3"):
        BNSparsity(schedule=3)
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs), name="no_bn")
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match=r"no BatchNormalization.*'no_bn'"):
        model.fit(*_data(), verbose=0, callbacks=[BNSparsity()])


def test_batch_norm_layers_finds_nested_and_skips_frozen_or_unscaled():
    inner_inputs = keras.Input((4,))
    inner = keras.Model(inner_inputs, keras.layers.BatchNormalization(name="inner_bn")(inner_inputs))
    inputs = keras.Input((4,))
    x = inner(inputs)
    x = keras.layers.BatchNormalization(scale=False, name="no_scale")(x)
    frozen = keras.layers.BatchNormalization(name="frozen")
    frozen.trainable = False
    x = frozen(x)
    model = keras.Model(inputs, keras.layers.BatchNormalization(name="outer")(x))
    assert [layer.name for layer in batch_norm_layers(model)] == ["inner_bn", "outer"]


def _digits_gamma_share_below(l1):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images[..., None] / 16.0).astype("float32")
    keras.utils.set_random_seed(3)
    inputs = keras.Input((8, 8, 1))
    x_ = inputs
    for filters in (16, 32):
        x_ = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x_)
        x_ = keras.layers.BatchNormalization(momentum=0.9)(x_)
        x_ = keras.layers.ReLU()(x_)
    x_ = keras.layers.GlobalAveragePooling2D()(x_)
    model = keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x_))
    model.compile(
        keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    callback = BNSparsity(l1, thresholds=(0.2,))
    history = model.fit(x, digits.target, batch_size=64, epochs=6, verbose=0, callbacks=[callback])
    return history.history["bn_gamma_below_0.2"][-1], history.history["accuracy"][-1]


def test_sparse_training_on_digits_grows_the_share_of_small_gammas():
    share_plain, _ = _digits_gamma_share_below(0.0)
    share_sparse, accuracy = _digits_gamma_share_below(3e-2)
    # measured: 0.0 without the penalty, 0.35 with it (48 scales in total)
    assert share_sparse > share_plain + 0.2, (share_plain, share_sparse)
    assert accuracy > 0.8


def test_mirrored_strategy_two_replicas_applies_the_penalty_once(tmp_path):
    script = textwrap.dedent(
        """
        import os, json
        os.environ["KERAS_BACKEND"] = "tensorflow"
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras, numpy as np
        from tfprune.callbacks import BNSparsity

        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        rng = np.random.default_rng(0)
        x = rng.normal(size=(16, 5)).astype("float32")
        y = rng.normal(size=(16, 2)).astype("float32")
        initial = np.array([0.5, -0.3, 1.2, -0.8, 0.05, 2.0], dtype="float32")

        def run(callbacks):
            with strategy.scope():
                keras.utils.set_random_seed(7)
                inputs = keras.Input((5,))
                h = keras.layers.Dense(6)(inputs)
                bn = keras.layers.BatchNormalization()
                h = keras.layers.Dense(2)(keras.layers.ReLU()(bn(h)))
                model = keras.Model(inputs, h)
                bn.gamma.assign(initial)
                model.compile(keras.optimizers.SGD(0.1), "mse")
            model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0,
                      callbacks=callbacks)
            return bn.gamma.numpy().tolist()

        print(json.dumps({
            "replicas": strategy.num_replicas_in_sync,
            "plain": run([]),
            "subgradient": run([BNSparsity(0.05)]),
            "proximal": run([BNSparsity(1.0, mode="proximal")]),
        }))
        """
    )
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    import json

    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    plain = np.array(result["plain"])
    initial = np.array([0.5, -0.3, 1.2, -0.8, 0.05, 2.0])
    np.testing.assert_allclose(
        np.array(result["subgradient"]) - plain, -0.1 * 0.05 * np.sign(initial), atol=1e-6
    )
    np.testing.assert_allclose(np.array(result["proximal"]), _soft_threshold(plain, 0.1), atol=1e-6)
