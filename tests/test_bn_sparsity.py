import glob
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from backend_gradients import gradients

import tfprune
from tfprune.callbacks import BNSparsity
from tfprune.callbacks.bn_sparsity import batch_norm_layers, effective_step, group_soft_threshold


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
        values = gradients(lambda x=x, y=y: loss_function(y, model(x, training=True)), model.trainable_variables)
        values = [
            g + l1 * np.sign(v.numpy()) if v is gamma else g
            for g, v in zip(values, model.trainable_variables)
        ]
        optimizer.apply(values, model.trainable_variables)
    return gamma.numpy()


def _subgradient(l1):
    return BNSparsity(l1, mode="subgradient", penalty="gamma")


def test_subgradient_one_sgd_step_adds_lr_times_l1_sign_gamma():
    initial = _toy_model().get_layer("bn").gamma.numpy()
    plain = _fit(_toy_model(), keras.optimizers.SGD(0.1), [])
    penalised = _fit(_toy_model(), keras.optimizers.SGD(0.1), [_subgradient(0.05)])
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
    got = _fit(model, make_optimizer(), [_subgradient(0.02)], batch_size=4)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # the penalty is removed once fit returns
    assert model.losses == []
    assert model.get_layer("bn").gamma.regularizer is None


def test_subgradient_keeps_an_existing_gamma_regularizer_and_restores_it():
    model = _toy_model()
    existing = keras.regularizers.L2(0.1)
    model.get_layer("bn").gamma.regularizer = existing
    _fit(model, keras.optimizers.SGD(0.1), [_subgradient(0.05)])
    assert model.get_layer("bn").gamma.regularizer is existing


def _soft_threshold(values, threshold):
    return np.sign(values) * np.maximum(np.abs(values) - threshold, 0.0)


def test_proximal_step_soft_thresholds_by_lr_times_l1_with_exact_zeros():
    plain = _fit(_toy_model(), keras.optimizers.SGD(0.1), [])
    proximal = _fit(_toy_model(), keras.optimizers.SGD(0.1), [BNSparsity(1.0, penalty="gamma")])
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
    import tensorflow as tf  # TensorBoard event files are TensorFlow's

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
    with pytest.raises(ValueError, match=r"`penalty` must be one of.*penalty='beta'"):
        BNSparsity(penalty="beta")
    with pytest.raises(ValueError, match=r"pass penalty='gamma'.*penalty='channel'"):
        BNSparsity(mode="subgradient")
    with pytest.raises(ValueError, match=r"`targets` must be.*targets='depthwise'"):
        BNSparsity(targets="depthwise")
    with pytest.raises(ValueError, match=r"`thresholds` must be.*thresholds=\(0.0,\)"):
        BNSparsity(thresholds=(0.0,))
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs), name="no_bn")
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match=r"no targeted BatchNormalization.*'no_bn'"):
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


def _redundant_task_run(callback, epochs=20):
    """64 hidden channels for a 4-class task that a few of them solve."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1024, 8)).astype("float32")
    y = ((x[:, 0] + x[:, 1]) > 0).astype("int32") + 2 * (x[:, 2] > 0.5).astype("int32")
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(64, use_bias=False, name="dense")(inputs)
    hidden = keras.layers.BatchNormalization(momentum=0.9, name="bn")(hidden)
    hidden = keras.layers.ReLU()(hidden)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="head")(hidden))
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    callbacks = [] if callback is None else [callback]
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=callbacks)
    gammas = np.abs(model.get_layer("bn").gamma.numpy())
    return model, gammas, model.evaluate(x, y, verbose=0, return_dict=True)["accuracy"], x


def test_proximal_channel_mode_under_adam_zeroes_channels_that_the_old_default_leaves_near_one():
    _, plain_gammas, plain_accuracy, _ = _redundant_task_run(None)
    _, old_gammas, _, _ = _redundant_task_run(BNSparsity(1e-4, mode="subgradient", penalty="gamma"))
    model, gammas, accuracy, x = _redundant_task_run(BNSparsity(0.05))
    # 320 Adam steps of lr 1e-3 move γ by at most 0.32: the subgradient leaves every γ far from 0.
    assert np.mean(old_gammas < 1e-2) == 0.0 and np.mean(plain_gammas < 1e-2) == 0.0
    # measured: 50% of the 64 scales exactly 0, accuracy 0.927 (plain 0.955)
    assert np.mean(gammas == 0.0) >= 0.4, np.mean(gammas == 0.0)
    assert accuracy > plain_accuracy - 0.05, (accuracy, plain_accuracy)
    # the zeroed channels output exactly 0 (γ and β are shrunk together): removing them is free
    pruned, _ = tfprune.prune(model, "bn_gamma", threshold=0.0, round_to=1)
    assert pruned.count_params() < model.count_params()
    np.testing.assert_allclose(pruned.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_defaults_are_the_proximal_channel_penalty():
    config = BNSparsity().get_config()
    assert (config["l1"], config["mode"], config["penalty"], config["targets"]) == (0.02, "proximal", "channel", "all")


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
            "subgradient": run([BNSparsity(0.05, mode="subgradient", penalty="gamma")]),
            "proximal": run([BNSparsity(1.0, penalty="gamma")]),
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


def _channel_prox(gamma, beta, steps_gamma, steps_beta, strength):
    """NumPy reference of the channel penalty's proximal step (one BN, groups of (γ_c, β_c))."""
    group_steps = 1.0 / np.sqrt((1.0 / steps_gamma**2 + 1.0 / steps_beta**2) / 2.0)
    norms = np.sqrt(gamma**2 + beta**2)
    factors = np.maximum(0.0, 1.0 - strength * group_steps / np.maximum(norms, 1e-30))
    return gamma * factors, beta * factors


def test_group_soft_threshold_matches_the_closed_form_and_keeps_ungrouped_coordinates():
    rng = np.random.default_rng(1)
    values = rng.normal(size=7).astype("float32")
    steps = rng.uniform(0.1, 2.0, size=7).astype("float32")
    group_ids = np.array([0, 0, 1, 2, 2, 2, 3])  # 3 == group_count: not grouped
    got = np.asarray(group_soft_threshold(values, steps, group_ids, 3, 0.4), "float64")
    expected = values.astype("float64").copy()
    for group in range(3):
        members = group_ids == group
        step = 1.0 / np.sqrt(np.mean(1.0 / steps[members].astype("float64") ** 2))
        norm = np.linalg.norm(values[members])
        expected[members] *= max(0.0, 1.0 - 0.4 * step / norm)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert got[6] == values[6]
    # a group of one coordinate is the soft threshold
    single = np.asarray(group_soft_threshold(np.array([0.5, -0.2], "float32"), np.ones(2, "float32"),
                                             np.array([0, 1]), 2, 0.3))
    np.testing.assert_allclose(single, [0.2, 0.0], atol=1e-6)


@pytest.mark.parametrize(
    "make_optimizer, reference",
    [
        (lambda: keras.optimizers.SGD(0.1, momentum=0.9), lambda o, i, t: 0.1),
        (lambda: keras.optimizers.Adam(0.01),
         lambda o, i, t: 0.01 * np.sqrt(1 - 0.999**t) / (np.sqrt(o._velocities[i].numpy()) + 1e-7)),
        (lambda: keras.optimizers.AdamW(0.01),
         lambda o, i, t: 0.01 * np.sqrt(1 - 0.999**t) / (np.sqrt(o._velocities[i].numpy()) + 1e-7)),
        (lambda: keras.optimizers.RMSprop(0.01), lambda o, i, t: 0.01 / np.sqrt(o._velocities[i].numpy() + 1e-7)),
        (lambda: keras.optimizers.Adagrad(0.01), lambda o, i, t: 0.01 / np.sqrt(o._accumulators[i].numpy() + 1e-7)),
        (lambda: keras.optimizers.Adamax(0.01), lambda o, i, t: 0.01 / (o._u[i].numpy() + 1e-7)),
    ],
    ids=["sgd", "adam", "adamw", "rmsprop", "adagrad", "adamax"],
)
def test_effective_step_is_the_optimizers_per_coordinate_step(make_optimizer, reference):
    variable = keras.Variable(np.array([1.0, -2.0, 3.0], "float32"))
    optimizer = make_optimizer()
    for gradient in ([0.1, -0.5, 2.0], [0.3, 0.1, -1.0]):
        optimizer.apply([keras.ops.convert_to_tensor(np.array(gradient, "float32"))], [variable])
    index = optimizer._get_variable_index(variable)
    expected = np.broadcast_to(reference(optimizer, index, 2), (3,))
    got = np.broadcast_to(np.asarray(effective_step(optimizer, variable)), (3,))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_channel_penalty_under_sgd_shrinks_gamma_and_beta_of_a_channel_together():
    model = _toy_model()
    model.get_layer("bn").beta.assign(np.array([0.1, 0.4, -0.2, 0.0, 0.02, 1.0], "float32"))
    plain_model = _toy_model()
    plain_model.get_layer("bn").beta.assign(model.get_layer("bn").beta.numpy())
    _fit(plain_model, keras.optimizers.SGD(0.1), [])
    _fit(model, keras.optimizers.SGD(0.1), [BNSparsity(1.0)])
    plain_bn, bn = plain_model.get_layer("bn"), model.get_layer("bn")
    gamma, beta = _channel_prox(plain_bn.gamma.numpy(), plain_bn.beta.numpy(), 0.1, 0.1, 1.0)
    np.testing.assert_allclose(bn.gamma.numpy(), gamma, atol=1e-6)
    np.testing.assert_allclose(bn.beta.numpy(), beta, atol=1e-6)
    # channel 4 (γ=0.05, β=0.02) is removed whole: both exactly zero
    assert bn.gamma.numpy()[4] == 0.0 and bn.beta.numpy()[4] == 0.0


def test_default_under_adam_is_the_proximal_step_in_adams_metric():
    """Would fail with the old step `lr * l1`: Adam's per-coordinate step is lr / sqrt(v̂)."""
    plain_model = _toy_model()
    _fit(plain_model, keras.optimizers.Adam(0.01), [])
    optimizer, plain_bn = plain_model.optimizer, plain_model.get_layer("bn")
    steps = [
        0.01 * np.sqrt(1 - 0.999) / (np.sqrt(optimizer._velocities[optimizer._get_variable_index(v)].numpy()) + 1e-7)
        for v in (plain_bn.gamma, plain_bn.beta)
    ]
    assert steps[0].max() > 10 * 0.01  # much more than lr=0.01 for the small-gradient scales
    gamma, beta = _channel_prox(plain_bn.gamma.numpy(), plain_bn.beta.numpy(), *steps, BNSparsity().l1)
    model = _toy_model()
    _fit(model, keras.optimizers.Adam(0.01), [BNSparsity()])
    np.testing.assert_allclose(model.get_layer("bn").gamma.numpy(), gamma, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.get_layer("bn").beta.numpy(), beta, rtol=1e-5, atol=1e-6)
    old_gamma, _ = _channel_prox(plain_bn.gamma.numpy(), plain_bn.beta.numpy(), 0.01, 0.01, BNSparsity().l1)
    assert np.abs(model.get_layer("bn").gamma.numpy() - old_gamma).max() > 1e-3


def _inverted_residual_model():
    keras.utils.set_random_seed(5)
    inputs = keras.Input((8, 8, 4))
    hidden = keras.layers.Conv2D(8, 1, use_bias=False, name="expand")(inputs)
    hidden = keras.layers.BatchNormalization(name="expand_bn")(hidden)
    hidden = keras.layers.Activation("hard_swish")(hidden)
    hidden = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="depthwise")(hidden)
    hidden = keras.layers.BatchNormalization(name="depthwise_bn")(hidden)
    hidden = keras.layers.Activation("hard_swish")(hidden)
    hidden = keras.layers.Conv2D(4, 1, use_bias=False, name="project")(hidden)
    hidden = keras.layers.BatchNormalization(name="project_bn")(hidden)
    hidden = keras.layers.Add()([inputs, hidden])
    outputs = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling2D()(hidden))
    return keras.Model(inputs, outputs)


def test_expansion_targets_penalise_both_batch_norms_of_the_expansion_channels_only():
    model = _inverted_residual_model()
    project_before = model.get_layer("project_bn").get_weights()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 8, 8, 4)).astype("float32")
    y = rng.normal(size=(32, 3)).astype("float32")
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    callback = BNSparsity(0.5, targets="expansion")
    model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[callback])
    assert sorted({v.path.split("/")[0] for v in callback._variables}) == ["depthwise_bn", "expand_bn"]
    expand, depthwise = model.get_layer("expand_bn"), model.get_layer("depthwise_bn")
    dead = expand.gamma.numpy() == 0.0
    assert dead.any()
    # a channel is zero in γ and β of both BNs at once, so its output is exactly 0
    for weights in (expand.beta, depthwise.gamma, depthwise.beta):
        assert np.all(weights.numpy()[dead] == 0.0)
    # removing the dead channels changes nothing
    pruned, _ = tfprune.prune(model, "bn_gamma", threshold=0.0, targets="expansion", round_to=1)
    assert pruned.count_params() < model.count_params()
    np.testing.assert_allclose(pruned.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    # the projection BN (not targeted) only trained: its γ never hit zero
    assert np.all(model.get_layer("project_bn").gamma.numpy() != 0.0)
    assert len(project_before) == 4


def test_get_config_round_trip():
    callback = BNSparsity(0.1, penalty="gamma", targets="expansion", warmup_epochs=2, thresholds=(0.5,))
    config = callback.get_config()
    again = BNSparsity(**config)
    assert again.get_config() == config
    assert config["mode"] == "proximal" and config["l1"] == 0.1


# --- the target form (issue 30): a controller adapts the strength -------------------------------

from tfprune.callbacks.bn_sparsity import adapt_strength, share_quantile, tracking_error  # noqa: E402


def test_share_quantile_is_the_magnitude_below_which_the_share_lies():
    magnitudes = np.array([0.3, 0.0, 1.0, 0.004, 0.2])
    assert share_quantile(magnitudes, 0.2) == 0.0  # ceil(0.2 * 5) = 1st smallest
    assert share_quantile(magnitudes, 0.5) == 0.2  # ceil(2.5) = 3rd smallest
    assert share_quantile(magnitudes, 0.4) == 0.004
    # share s below t  <=>  the quantile is below t
    for share in (0.2, 0.4, 0.5, 0.8):
        assert (np.mean(magnitudes < 0.25) >= share) == (share_quantile(magnitudes, share) < 0.25)


def test_controller_raises_the_strength_below_target_and_lowers_it_above():
    goal = 0.1
    # the quantile above its goal: too few small scales, the strength rises
    error_below_target = tracking_error(0.14, goal)
    assert error_below_target == pytest.approx(np.log2(1.4))
    raised = adapt_strength(0.02, error_below_target, 2.0, 0.25)
    assert raised == pytest.approx(0.02 * np.exp(2.0 * np.log2(1.4) * 0.25))
    # the quantile below its goal (shrinking ahead of the ramp): the strength falls
    lowered = adapt_strength(0.02, tracking_error(0.08, goal), 2.0, 0.25)
    assert lowered == pytest.approx(0.02 * np.exp(2.0 * np.log2(0.8) * 0.25))
    assert raised > 0.02 > lowered
    # saturation: a factor of 2 off or more counts as 1
    assert tracking_error(50.0, goal) == 1.0 and tracking_error(0.04, goal) == -1.0
    # on the goal, or an exact zero at the target share (reached): held
    assert adapt_strength(0.02, tracking_error(goal, goal), 2.0, 1.0) == pytest.approx(0.02)
    assert tracking_error(0.0, goal) == 0.0


def test_scheduled_quantile_falls_linearly_to_half_the_threshold_after_the_warmup():
    callback = BNSparsity(target=0.5, ramp_epochs=4, warmup_epochs=1, target_threshold=0.02)
    callback._start_quantile = 0.81
    assert callback.scheduled_quantile(0.5) == pytest.approx(0.81)  # warm-up
    assert callback.scheduled_quantile(3.0) == pytest.approx(0.01 + 0.8 * 0.5)
    assert callback.scheduled_quantile(5.0) == pytest.approx(0.01)
    assert callback.scheduled_quantile(50.0) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="needs a `target`"):
        BNSparsity().scheduled_quantile(1.0)


def test_group_soft_threshold_cutoff_and_units_guard():
    values = np.array([0.05, 0.5, 0.08, 0.02, 3.0], "float32")
    steps = np.ones(5, "float32")
    group_ids = np.arange(5)
    # groups above the cutoff are untouched, the others soft-thresholded
    got = np.asarray(group_soft_threshold(values, steps, group_ids, 5, 0.1, cutoff=0.1))
    np.testing.assert_allclose(got, [0.0, 0.5, 0.0, 0.0, 3.0], atol=1e-7)
    # units {0, 1, 2} and {3, 4}: a strength that zeroes everything leaves each unit its largest group
    units = np.array([0, 0, 0, 1, 1])
    got = np.asarray(group_soft_threshold(values, steps, group_ids, 5, 10.0, group_units=units))
    np.testing.assert_allclose(got, [0.0, 0.5, 0.0, 0.0, 3.0], atol=1e-7)
    # a unit that keeps a group by itself is left to the plain soft threshold
    got = np.asarray(group_soft_threshold(values, steps, group_ids, 5, 0.4, group_units=units))
    np.testing.assert_allclose(got, [0.0, 0.1, 0.0, 0.0, 2.6], atol=1e-6)


def test_a_huge_fixed_strength_never_empties_a_batch_norm_layer():
    model = _toy_model()
    gammas = _fit(model, keras.optimizers.SGD(0.1), [BNSparsity(100.0)], epochs=2)
    # without the guard every channel of the only group is zeroed (100 * 0.1 >> every |γ|)
    assert np.count_nonzero(gammas) == 1
    assert np.argmax(np.abs(gammas)) == 5  # the largest channel (γ = 2.0) is the one kept


def _redundant_target_run(optimizer, target, epochs):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 8)).astype("float32")
    y = ((x[:, 0] + x[:, 1]) > 0).astype("int32") + 2 * (x[:, 2] > 0.5).astype("int32")
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(32, use_bias=False, name="dense")(inputs)
    hidden = keras.layers.BatchNormalization(momentum=0.9, name="bn")(hidden)
    hidden = keras.layers.ReLU()(hidden)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="head")(hidden))
    model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
    callback = BNSparsity(target=target)
    history = model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=[callback])
    return model, history.history, x


@pytest.mark.parametrize(
    "make_optimizer", [lambda: keras.optimizers.Adam(1e-2), lambda: keras.optimizers.SGD(0.1, momentum=0.9)],
    ids=["adam", "sgd"],
)
def test_target_form_reaches_its_share_without_a_strength_and_removal_is_free(make_optimizer):
    model, history, x = _redundant_target_run(make_optimizer(), 0.25, epochs=12)
    gammas = np.abs(model.get_layer("bn").gamma.numpy())
    # 8 of the 32 channels end below 1e-2 (most exactly at zero), and no more: only the groups
    # ranked in the bottom share are penalised
    assert np.sum(gammas < 1e-2) == 8, gammas
    assert np.sum(gammas == 0.0) >= 6, gammas
    assert np.sort(gammas)[8] > 0.1, gammas
    assert history["bn_channel_share"][-1] == pytest.approx(0.25)
    assert history["bn_gamma_below_0.01"][-1] == pytest.approx(0.25)
    # the strength was adapted: it rose from 0.02 while nothing was zero yet
    assert history["bn_gamma_l1"][0] > 0.02
    assert {"bn_gamma_quantile", "bn_gamma_quantile_goal"} <= set(history)
    pruned, _ = tfprune.prune(model, "bn_gamma", rate=0.25, round_to=1)
    # removing the (near-)zero channels leaves the outputs nearly unchanged
    np.testing.assert_allclose(pruned.predict(x, verbose=0), model.predict(x, verbose=0), atol=2e-2)


def test_target_form_config_round_trip_and_old_configs_still_load():
    callback = BNSparsity(target=0.4, target_threshold=0.02, ramp_epochs=5, gain=3.0, targets="expansion")
    config = callback.get_config()
    assert BNSparsity(**config).get_config() == config
    assert (config["target"], config["target_threshold"], config["ramp_epochs"], config["gain"]) == (0.4, 0.02, 5, 3.0)
    # a config saved before the target form (no target keys) is the fixed strength
    old = {key: value for key, value in BNSparsity(0.1).get_config().items()
           if key not in ("target", "target_threshold", "ramp_epochs", "gain")}
    assert BNSparsity(**old).target is None and BNSparsity(**old).strength(3) == 0.1


def test_target_form_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match=r"`target` must be .*target=1.5"):
        BNSparsity(target=1.5)
    with pytest.raises(ValueError, match=r"`target` must be .*target=True"):
        BNSparsity(target=True)
    with pytest.raises(ValueError, match=r"use mode='proximal'.*mode='subgradient'"):
        BNSparsity(target=0.5, mode="subgradient", penalty="gamma")
    with pytest.raises(ValueError, match=r"either `target` or `schedule`"):
        BNSparsity(target=0.5, schedule=lambda epoch, l1: l1)
    with pytest.raises(ValueError, match=r"`l1` is the starting strength.*l1=0"):
        BNSparsity(0, target=0.5)
    with pytest.raises(ValueError, match=r"`target_threshold` must be.*target_threshold=0"):
        BNSparsity(target=0.5, target_threshold=0)
    with pytest.raises(ValueError, match=r"`ramp_epochs` must be.*ramp_epochs=-1"):
        BNSparsity(target=0.5, ramp_epochs=-1)
    with pytest.raises(ValueError, match=r"`gain` must be.*gain=0"):
        BNSparsity(target=0.5, gain=0)
