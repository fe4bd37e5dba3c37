"""Tests for tfprune.sparsify, tfprune.strip (on STR models) and tfprune.sparsity_report."""

import keras
import numpy as np
import pytest

import tfprune
from tfprune.callbacks.sparsity_budget import common_threshold_scale
from tfprune.layers import STRConv1D, STRConv2D, STRDense, STRDepthwiseConv2D
from tfprune.sparsity import str_layers


def functional_model():
    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(8, 3, name="stem")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(6, 1, use_bias=False)(x)
    x = keras.layers.Reshape((64, 6))(x)
    x = keras.layers.Conv1D(4, 3, padding="causal")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(5, name="logits")(x)
    return keras.Model(inputs, outputs, name="functional")


def sequential_model():
    return keras.Sequential(
        [
            keras.Input((12,)),
            keras.layers.Dense(16, activation="relu", name="hidden"),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(3, name="logits"),
        ],
        name="sequential",
    )


def sample(model, seed=0):
    return np.random.default_rng(seed).normal(size=(4,) + model.input_shape[1:]).astype("float32")


def weights_of(model):
    return [keras.ops.convert_to_numpy(weight).copy() for weight in model.weights]


def set_global_sparsity(model, target):
    layers = str_layers(model)
    scale = common_threshold_scale(layers, target)
    for layer in layers:
        layer.scale_thresholds(scale)


@pytest.mark.parametrize("build", [functional_model, sequential_model])
def test_sparsify_then_strip_reproduces_outputs_and_leaves_inputs_unchanged(build):
    model = build()
    data = sample(model)
    expected = model.predict(data, verbose=0)
    original_weights = weights_of(model)

    sparse = tfprune.sparsify(model)
    plain = tfprune.strip(sparse)

    np.testing.assert_allclose(sparse.predict(data, verbose=0), expected, atol=1e-6)
    np.testing.assert_allclose(plain.predict(data, verbose=0), expected, atol=1e-6)
    assert type(sparse) is type(model) and type(plain) is type(model)
    assert [layer.name for layer in sparse.layers] == [layer.name for layer in model.layers]
    assert not str_layers(plain)
    for before, after in zip(original_weights, weights_of(model)):
        np.testing.assert_array_equal(before, after)
    assert not str_layers(model)


def test_sparsify_maps_each_layer_type_and_honours_skip():
    sparse = tfprune.sparsify(functional_model(), skip=("stem", "logits"), granularity="filter")
    types = {layer.name: type(layer) for layer in sparse.layers}
    assert types["stem"] is keras.layers.Conv2D
    assert types["logits"] is keras.layers.Dense
    assert types["depthwise_conv2d"] is STRDepthwiseConv2D
    assert types["conv2d"] is STRConv2D
    assert types["conv1d"] is STRConv1D
    assert all(layer.granularity == "filter" for layer in str_layers(sparse))


def test_strip_bakes_sparse_kernels_in_and_keeps_outputs(tmp_path):
    model = tfprune.sparsify(functional_model())
    set_global_sparsity(model, 0.6)
    data = sample(model, seed=1)
    str_weights = weights_of(model)
    plain = tfprune.strip(model)
    for layer in str_layers(model):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(plain.get_layer(layer.name).kernel),
            keras.ops.convert_to_numpy(layer.sparse_kernel),
        )
    np.testing.assert_allclose(plain.predict(data, verbose=0), model.predict(data, verbose=0), atol=1e-5)
    for before, after in zip(str_weights, weights_of(model)):
        np.testing.assert_array_equal(before, after)


def test_sparsified_model_round_trips_through_keras_file(tmp_path):
    model = tfprune.sparsify(functional_model(), mode="channel")
    set_global_sparsity(model, 0.3)
    data = sample(model, seed=2)
    path = tmp_path / "sparse.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(data, verbose=0), model.predict(data, verbose=0), atol=1e-6)
    assert tfprune.sparsity_report(loaded).global_sparsity == tfprune.sparsity_report(model).global_sparsity


def test_sparsity_report_counts_zeros_and_macs():
    model = tfprune.sparsify(functional_model(), skip=("stem",))
    set_global_sparsity(model, 0.5)
    report = tfprune.sparsity_report(model)
    zeros = {
        layer.name: int(np.sum(keras.ops.convert_to_numpy(layer.sparse_kernel) == 0))
        for layer in str_layers(model)
    }
    sizes = {layer.name: int(np.prod(layer.sparse_kernel.shape)) for layer in str_layers(model)}
    records = {record["name"]: record for record in report.layers}
    assert list(records) == ["depthwise_conv2d", "conv2d", "conv1d", "logits"]
    for name, record in records.items():
        assert record["parameters"] == sizes[name]
        assert record["nonzero_parameters"] == sizes[name] - zeros[name]
        assert record["sparsity"] == pytest.approx(zeros[name] / sizes[name])
    # MACs by hand: kernel weights x output positions.
    assert records["depthwise_conv2d"]["macs"] == 3 * 3 * 8 * 2 * 8 * 8
    assert records["conv2d"]["macs"] == 16 * 6 * 8 * 8
    assert records["conv1d"]["macs"] == 3 * 6 * 4 * 64
    assert records["logits"]["macs"] == 4 * 5
    assert records["conv2d"]["nonzero_macs"] == records["conv2d"]["nonzero_parameters"] * 64
    assert report.global_sparsity == pytest.approx(sum(zeros.values()) / sum(sizes.values()))
    assert abs(report.global_sparsity - 0.5) < 0.01
    text = str(report)
    assert "depthwise_conv2d" in text and "STRConv1D" in text and f"{report.global_sparsity:.1%}" in text


def test_sparsity_report_flags_empty_and_nearly_empty_layers():
    model = tfprune.sparsify(functional_model(), skip=("stem",))
    set_global_sparsity(model, 0.3)
    layers = {layer.name: layer for layer in str_layers(model)}
    layers["conv2d"].threshold_parameter.assign(10.0)  # g ~ 1: every weight below it
    for name in ("logits", "depthwise_conv2d"):  # keep exactly the largest weight
        magnitudes = np.sort(np.abs(keras.ops.convert_to_numpy(layers[name]._kernel)).ravel())
        threshold = (magnitudes[-2] + magnitudes[-1]) / 2
        layers[name].threshold_parameter.assign(np.log(threshold / (1 - threshold)))
    report = tfprune.sparsity_report(model)
    statuses = {record["name"]: record["status"] for record in report.layers}
    assert report.emptied_layers == ["conv2d"]
    # 1 of 144 depthwise weights non-zero is below NEARLY_EMPTY (1%); 1 of 20 logits weights is not.
    assert report.nearly_empty_layers == ["depthwise_conv2d"]
    assert statuses == {"depthwise_conv2d": "nearly empty", "conv2d": "empty", "conv1d": "", "logits": ""}
    text = str(report)
    assert "EMPTY (no non-zero weight; they cut the network): conv2d" in text
    assert "Nearly empty (< 1% non-zero): depthwise_conv2d" in text


def test_sparsity_report_counts_whole_filters_in_channel_mode():
    inputs = keras.Input((6,))
    layer = STRDense(4, mode="channel", granularity="filter", name="dense")
    model = keras.Model(inputs, layer(inputs))
    layer._kernel.assign(np.full((6, 4), 0.1))  # every filter norm is 0.1 * sqrt(6) = 0.245
    layer.threshold_parameter.assign(np.log(np.array([0.3, 0.2, 0.3, 0.2]) / np.array([0.7, 0.8, 0.7, 0.8])))
    record = tfprune.sparsity_report(model).layers[0]
    assert record["nonzero_parameters"] == 12
    np.testing.assert_array_equal(layer.zero_filters(), [True, False, True, False])


def test_sparse_tflite_file_is_smaller_and_computes_the_same():
    tf = pytest.importorskip("tensorflow")  # the tensorflow extra: skipped without it
    Interpreter = pytest.importorskip("ai_edge_litert.interpreter").Interpreter

    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Dense(64, activation="relu")(x)))
    sparse = tfprune.sparsify(model)
    set_global_sparsity(sparse, 0.9)
    assert tfprune.sparsity_report(sparse).global_sparsity == pytest.approx(0.9, abs=1e-4)
    plain = tfprune.strip(sparse)

    def convert(optimizations):
        converter = tf.lite.TFLiteConverter.from_keras_model(plain)
        converter.optimizations = optimizations
        return converter.convert()

    dense_file = convert([])
    sparse_file = convert([tf.lite.Optimize.EXPERIMENTAL_SPARSITY])
    # 90% zeros: the sparse encoding must at least halve the file (measured: ~6x).
    assert len(sparse_file) < 0.5 * len(dense_file)
    data = sample(plain, seed=3)[:1]
    expected = plain.predict(data, verbose=0)
    for content in (dense_file, sparse_file):
        interpreter = Interpreter(model_content=content)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], data)
        interpreter.invoke()
        outputs = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-5)


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, inputs):
        return self.dense(inputs)


def test_sparsify_refuses_bad_input():
    model = sequential_model()
    with pytest.raises(TypeError, match=r"cannot transform subclassed model"):
        subclassed = Subclassed()
        subclassed(np.ones((1, 3)))
        tfprune.sparsify(subclassed)
    with pytest.raises(TypeError, match=r"not one string\. Received: skip='hidden'"):
        tfprune.sparsify(model, skip="hidden")
    with pytest.raises(ValueError, match=r"does not have.*Received: skip=\['conv'\]"):
        tfprune.sparsify(model, skip=("conv",))
    with pytest.raises(TypeError, match=r"Received unknown arguments: \['sinit'\]"):
        tfprune.sparsify(model, sinit=-5.0)
    with pytest.raises(ValueError, match=r"found no Conv1D.*skip=\['hidden', 'logits'\]"):
        tfprune.sparsify(model, skip=("hidden", "logits"))
    with pytest.raises(ValueError, match=r"Received: granularity='row'"):
        tfprune.sparsify(model, granularity="row")


def test_sparsity_report_refuses_model_without_str_layers():
    with pytest.raises(ValueError, match=r"found no STR layer in model 'sequential'.*tfprune\.sparsify"):
        tfprune.sparsity_report(sequential_model())


def test_sparsity_report_finds_str_layers_of_nested_models():
    inner_inputs = keras.Input((4,))
    inner = keras.Model(inner_inputs, STRDense(3, name="dense")(inner_inputs), name="inner")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, STRDense(2, name="head")(inner(inputs)))
    set_global_sparsity(model, 0.5)
    report = tfprune.sparsity_report(model)
    assert [record["name"] for record in report.layers] == ["inner/dense", "head"]
    assert [record["macs"] for record in report.layers] == [12, 6]
    assert report.parameters == 18


def test_strip_reaches_into_a_nested_model_holding_str_layers():
    inputs = keras.Input((6,))
    backbone = keras.Model(inputs, tfprune.layers.STRDense(5, name="sparse_hidden")(inputs), name="backbone")
    outer_inputs = keras.Input((6,), name="features")
    model = keras.Model(outer_inputs, keras.layers.Dense(2, name="head")(backbone(outer_inputs)))
    plain = tfprune.strip(model)
    assert [type(layer).__name__ for layer in plain.layers] == ["InputLayer", "Dense", "Dense"]
    x = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(plain(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-6)
