import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

import tfprune
from tfprune import export, surgery
from tfprune.export.convert import _write_saved_model
from tfprune.export.inputs import model_inputs

FLOAT_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def digits():
    """Digits images (8x8x1 in [0, 1]): 1437 train and 360 test samples."""
    (train_images, train_labels), (test_images, test_labels) = tfprune.datasets.digits(
        image_size=8, channels=1, as_numpy=True
    )
    return train_images, train_labels, test_images, test_labels


def _cnn(widths=(16, 32), name="cnn"):
    inputs = keras.Input((8, 8, 1), name="image")
    hidden = inputs
    for index, width in enumerate(widths):
        hidden = keras.layers.Conv2D(width, 3, activation="relu", name=f"conv{index}")(hidden)
    hidden = keras.layers.Flatten()(hidden)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(hidden), name=name)


@pytest.fixture(scope="module")
def trained_cnn(digits):
    train_images, train_labels, test_images, test_labels = digits
    keras.utils.set_random_seed(0)
    model = _cnn()
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(train_images, train_labels, batch_size=32, epochs=6, verbose=0)
    accuracy = model.evaluate(test_images, test_labels, verbose=0)[1]
    assert accuracy > 0.9, "the digits CNN did not train; the int8 test would be meaningless"
    return model


def _sparse_copy(model, sparsity=0.9):
    """A copy of `model` whose kernels have their smallest `sparsity` fraction set to exactly 0.

    This is what a stripped STR model looks like: plain layers with zeros baked in.
    """
    copy = keras.models.clone_model(model)
    for source, target in zip(model.layers, copy.layers):
        weights = [np.array(weight) for weight in source.get_weights()]
        if weights:
            kernel = weights[0]
            kernel[np.abs(kernel) < np.quantile(np.abs(kernel), sparsity)] = 0.0
            target.set_weights(weights)
    return copy


def _keras_outputs(model, images):
    return keras.ops.convert_to_numpy(model(images, training=False))


def _weights(model):
    return [np.array(weight) for weight in model.get_weights()]


@pytest.fixture(scope="module")
def float_export(trained_cnn, digits, tmp_path_factory):
    """The float32 export of `trained_cnn`, verified on the digits test images."""
    path = tmp_path_factory.mktemp("float") / "dense.tflite"
    return export.to_tflite(trained_cnn, path, sample_inputs=digits[2])


def test_float_round_trip_of_a_dense_model(trained_cnn, digits, float_export):
    test_images = digits[2]
    report = float_export
    path = report.path

    assert report.path.endswith("dense.tflite")
    assert report.size_bytes == os.path.getsize(path)
    assert report.num_samples == len(test_images)
    assert report.max_abs_error < FLOAT_TOLERANCE
    assert report.top1_agreement == 1.0
    assert report.xnnpack is True
    # Checked again independently of the report: the written file, run through the interpreter.
    (outputs,) = export.predict(path, test_images)
    np.testing.assert_allclose(
        outputs, _keras_outputs(trained_cnn, test_images), atol=FLOAT_TOLERANCE
    )
    assert report.ops["CONV_2D"] == 2 and report.ops["FULLY_CONNECTED"] == 1
    assert report.inputs == [
        {"name": "image", "shape": [-1, 8, 8, 1], "dtype": "float32", "scale": 0.0, "zero_point": 0}
    ]
    assert [output["shape"] for output in report.outputs] == [[-1, 10]]
    # float32 weights: the file holds at least 4 bytes per parameter.
    assert report.size_bytes > 4 * trained_cnn.count_params()
    assert report.dense_size_bytes is None


def test_report_to_dict_is_json_and_printable(float_export):
    report = float_export
    restored = json.loads(json.dumps(report.to_dict()))
    assert restored["size_bytes"] == report.size_bytes
    assert restored["ops"] == report.ops
    text = str(report)
    assert report.path in text
    assert "max abs error" in text and "CONV_2D x2" in text


def test_sparse_encoding_shrinks_a_90_percent_sparse_model(
    trained_cnn, digits, float_export, tmp_path
):
    sparse_model = _sparse_copy(trained_cnn)
    test_images = digits[2]
    report = export.to_tflite(
        sparse_model, tmp_path / "sparse.tflite", sparse=True, sample_inputs=test_images
    )

    # Without the encoding, the file is as large as the dense model's (same shapes, same ops).
    assert abs(report.dense_size_bytes - float_export.size_bytes) < 0.01 * float_export.size_bytes
    # 10% of the weights remain; the encoding stores them with their indices.
    assert report.size_bytes < 0.5 * report.dense_size_bytes
    assert report.max_abs_error < FLOAT_TOLERANCE
    assert "DENSIFY" in report.ops


def test_str_model_is_stripped_and_round_trips(digits, tmp_path):
    inputs = keras.Input((8, 8, 1))
    hidden = tfprune.layers.STRConv2D(16, 3, activation="relu", name="conv0")(inputs)
    hidden = tfprune.layers.STRConv2D(32, 3, activation="relu", name="conv1")(hidden)
    hidden = keras.layers.Flatten()(hidden)
    outputs = tfprune.layers.STRDense(10, name="logits")(hidden)
    model = keras.Model(inputs, outputs)
    # The default threshold sigmoid(-20) leaves the kernel dense; move each threshold to the
    # 90th percentile of its layer's |kernel| (sigmoid's inverse is the logit): ~90% sparsity.
    for layer in model.layers[1:]:
        if hasattr(layer, "threshold_parameter"):
            magnitude = np.quantile(np.abs(keras.ops.convert_to_numpy(layer.sparse_kernel)), 0.9)
            logit = np.log(magnitude / (1 - magnitude))
            layer.threshold_parameter.assign(np.full(layer.threshold_parameter.shape, logit))
    before = _weights(model)

    report = export.to_tflite(model, tmp_path / "str.tflite", sparse=True, sample_inputs=digits[2])

    assert report.max_abs_error < FLOAT_TOLERANCE
    assert report.size_bytes < 0.5 * report.dense_size_bytes
    stripped = tfprune.strip(model)
    assert {type(layer).__name__ for layer in stripped.layers} == {
        "InputLayer",
        "Conv2D",
        "Flatten",
        "Dense",
    }
    kernels = [layer.get_weights()[0] for layer in stripped.layers if layer.get_weights()]
    assert np.mean(np.concatenate([kernel.ravel() for kernel in kernels]) == 0) > 0.85
    for expected, actual in zip(before, _weights(model)):
        np.testing.assert_array_equal(expected, actual)


def test_channel_pruned_model_round_trips(tmp_path):
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Conv2D(16, 3, name="conv1")(inputs)
    hidden = keras.layers.BatchNormalization(name="bn1")(hidden)
    hidden = keras.layers.ReLU()(hidden)
    hidden = keras.layers.Conv2D(32, 3, activation="relu", name="conv2")(hidden)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(hidden))
    random = np.random.default_rng(1)
    model.get_layer("bn1").set_weights(
        [
            random.uniform(0.5, 1.5, 16),
            random.normal(size=16),
            random.normal(size=16),
            random.uniform(0.5, 2, 16),
        ]
    )
    small = surgery.remove_channels(model, {"conv1": [0, 3, 5, 9], "conv2": list(range(0, 32, 2))})
    assert small.get_layer("conv2").filters == 16

    report = export.to_tflite(small, tmp_path / "small.tflite")
    full = export.to_tflite(model, tmp_path / "full.tflite", verify=False)

    assert report.num_samples == export.RANDOM_SAMPLES
    assert report.max_abs_error < FLOAT_TOLERANCE
    assert report.size_bytes < full.size_bytes


def test_int8_top1_agreement_on_digits(trained_cnn, digits, float_export, tmp_path):
    train_images, train_labels, test_images, _ = digits
    # A batched (inputs, labels) dataset, as users pass to fit(); it is unbatched for calibration.
    calibration = tf.data.Dataset.from_tensor_slices((train_images, train_labels)).batch(32)
    path = tmp_path / "int8.tflite"
    report = export.to_tflite(
        trained_cnn,
        path,
        quantize="int8",
        representative_data=calibration,
        sample_inputs=test_images,
    )

    assert report.top1_agreement >= 0.98
    (outputs,) = export.predict(path, test_images)
    expected = _keras_outputs(trained_cnn, test_images)
    assert np.mean(outputs.argmax(-1) == expected.argmax(-1)) >= 0.98
    # Documented choice: float32 input and output, int8 inside.
    assert report.inputs[0]["dtype"] == "float32" and report.outputs[0]["dtype"] == "float32"
    assert report.ops["QUANTIZE"] == 1 and report.ops["DEQUANTIZE"] == 1
    # int8 weights: about a quarter of the float file.
    assert report.size_bytes < 0.4 * float_export.size_bytes


def test_predict_quantizes_integer_inputs_and_dequantizes_outputs(trained_cnn, digits, tmp_path):
    train_images, _, test_images, _ = digits

    def calibration():
        for index in range(100):
            yield [train_images[index : index + 1]]

    saved_model_dir = str(tmp_path / "saved_model")
    _write_saved_model(trained_cnn, model_inputs(trained_cnn), saved_model_dir)

    def convert(integer_io):
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = calibration
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if integer_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        return converter.convert()

    (float_io,) = export.predict(convert(False), test_images)
    integer_io_file = convert(True)
    (integer_io,) = export.predict(integer_io_file, test_images)
    # Same calibration, same int8 graph: the two agree to about one output quantization step.
    output_scale = Interpreter(model_content=integer_io_file).get_output_details()[0][
        "quantization"
    ][0]
    assert output_scale > 0
    np.testing.assert_allclose(integer_io, float_io, atol=2 * output_scale)
    assert (
        np.mean(integer_io.argmax(-1) == _keras_outputs(trained_cnn, test_images).argmax(-1))
        >= 0.98
    )


@pytest.mark.parametrize(
    ("quantize", "tolerance", "size_ratio"), [("dynamic", 0.1, 0.4), ("float16", 0.01, 0.6)]
)
def test_weight_quantization_modes(
    trained_cnn, digits, float_export, tmp_path, quantize, tolerance, size_ratio
):
    test_images = digits[2]
    report = export.to_tflite(
        trained_cnn, tmp_path / "q.tflite", quantize=quantize, sample_inputs=test_images
    )
    assert report.quantize == quantize
    assert report.max_abs_error < tolerance
    assert report.top1_agreement >= 0.98
    assert report.size_bytes < size_ratio * float_export.size_bytes


def test_sparse_int8_falls_back_to_builtin_kernels_and_benchmarks(trained_cnn, digits, tmp_path):
    # XNNPACK refuses sparse-encoded int8 weights; verification and benchmark use the built-in kernels.
    sparse_model = _sparse_copy(trained_cnn)
    path = tmp_path / "sparse_int8.tflite"
    report = export.to_tflite(
        sparse_model, path, quantize="int8", representative_data=digits[0][:100], sparse=True
    )
    assert report.xnnpack is False
    assert report.size_bytes < report.dense_size_bytes
    assert report.num_samples == 100  # the calibration samples when no sample_inputs are given
    assert report.top1_agreement >= 0.9
    bench = export.benchmark(path, threads=(1,), runs=3, warmup=1)
    assert bench.delegate == "builtin"
    assert bench.latency[0]["median_ms"] > 0


def test_input_model_is_not_modified(trained_cnn, digits, tmp_path):
    sparse_model = _sparse_copy(trained_cnn)
    before = _weights(sparse_model)
    layers_before = [layer.name for layer in sparse_model.layers]
    export.to_tflite(
        sparse_model,
        tmp_path / "m.tflite",
        quantize="int8",
        representative_data=digits[0][:50],
    )
    assert [layer.name for layer in sparse_model.layers] == layers_before
    for expected, actual in zip(before, _weights(sparse_model)):
        np.testing.assert_array_equal(expected, actual)


def test_sequential_model_exports(tmp_path):
    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(3, activation="tanh"), keras.layers.Dense(1)]
    )
    report = export.to_tflite(model, tmp_path / "sequential.tflite")
    assert report.max_abs_error < FLOAT_TOLERANCE
    assert report.top1_agreement is None  # one output column is not class scores


def test_mixed_precision_model_exports_in_float32(digits, tmp_path):
    keras.config.set_dtype_policy("mixed_float16")
    mixed = _cnn()
    keras.config.set_dtype_policy("float32")
    reference = _cnn()
    reference.set_weights(mixed.get_weights())
    test_images = digits[2]

    report = export.to_tflite(mixed, tmp_path / "mixed.tflite", sample_inputs=test_images)

    assert "CAST" not in report.ops and report.outputs[0]["dtype"] == "float32"
    # The file computes in float32: it matches the float32 twin exactly, the float16 model loosely.
    (outputs,) = export.predict(report.path, test_images)
    np.testing.assert_allclose(
        outputs, _keras_outputs(reference, test_images), atol=FLOAT_TOLERANCE
    )
    assert report.max_abs_error < 0.05
    assert mixed.layers[1].dtype_policy.name == "mixed_float16"


@keras.saving.register_keras_serializable(package="tfprune_tests")
class _SingularValues(keras.layers.Layer):
    """Uses an op TFLite has no built-in kernel for."""

    def call(self, inputs):
        return tf.linalg.svd(inputs, compute_uv=False)


def _unconvertible_model():
    inputs = keras.Input((4, 4))
    return keras.Model(inputs, _SingularValues()(inputs))


def test_failed_conversion_leaves_existing_file_untouched(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"previous export")
    with pytest.raises(
        ValueError, match=r"Cannot convert model .*\['Svd'\] have no TFLite built-in kernel"
    ):
        export.to_tflite(_unconvertible_model(), path)
    assert path.read_bytes() == b"previous export"
    assert os.listdir(tmp_path) == ["model.tflite"]  # no temporary file left behind


def test_overwrite_false_refuses_existing_file(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"previous export")
    with pytest.raises(FileExistsError, match="already exists"):
        export.to_tflite(_cnn(), path, overwrite=False)
    assert path.read_bytes() == b"previous export"
    export.to_tflite(_cnn(), path, verify=False)
    assert path.read_bytes() != b"previous export"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"quantize": "int4"}, ValueError, r"Received: quantize='int4'"),
        ({"quantize": ["int8"]}, ValueError, r"Received: quantize=\['int8'\]"),
        ({"quantize": "int8"}, ValueError, "needs `representative_data`"),
        (
            {"representative_data": np.zeros((4, 7, 7, 1))},
            ValueError,
            r"input 'image' of shape \(None, 8, 8, 1\).*\(4, 7, 7, 1\)",
        ),
        (
            {"sample_inputs": np.zeros((8, 8, 1))},
            ValueError,
            r"Received: sample_inputs with shape \(8, 8, 1\)",
        ),
        ({"sample_inputs": {"image": 1}}, ValueError, r"Received: sample_inputs with shape \(\)"),
        ({"sample_inputs": {"pixels": np.zeros((2, 8, 8, 1))}}, ValueError, r"no array for \['image'\]"),
        ({"sample_inputs": "images"}, TypeError, "sample_inputs of type str"),
        ({"path": "missing_dir/model.tflite"}, ValueError, "does not exist; create it first"),
        ({"path": "."}, ValueError, "`path` is a directory"),
        ({"path": 3}, TypeError, r"Received: path=3"),
        (
            {"representative_data": tf.data.Dataset.from_tensor_slices(np.zeros((0, 8, 8, 1)))},
            ValueError,
            "empty",
        ),
    ],
)
def test_to_tflite_rejects_bad_arguments(tmp_path, monkeypatch, kwargs, error, message):
    monkeypatch.chdir(tmp_path)
    arguments = {"path": "model.tflite", **kwargs}
    with pytest.raises(error, match=message):
        export.to_tflite(_cnn(), **arguments)
    assert os.listdir(tmp_path) == []


def test_to_tflite_rejects_non_models(tmp_path):
    with pytest.raises(TypeError, match="to_tflite` expects a Keras 3 `keras.Model`"):
        export.to_tflite("model.keras", tmp_path / "m.tflite")


def test_benchmark_reports_positive_latency_and_memory(trained_cnn, tmp_path):
    path = tmp_path / "model.tflite"
    export.to_tflite(trained_cnn, path, verify=False)
    report = export.benchmark(path, threads=(1, 2), runs=5, warmup=2)

    assert report.delegate == "xnnpack"
    assert report.input_shapes == [[1, 8, 8, 1]]
    assert [entry["threads"] for entry in report.latency] == [1, 2]
    for entry in report.latency:
        assert 0 < entry["min_ms"] <= entry["median_ms"] <= entry["max_ms"]
    assert report.peak_rss_bytes > report.model_rss_bytes >= 0
    assert json.loads(json.dumps(report.to_dict()))["runs"] == 5
    assert "2 thread(s)" in str(report)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threads": (0,)}, r"Received: threads=\(0,\)"),
        ({"threads": ()}, "positive ints"),
        ({"runs": 0}, "Received: runs=0"),
        ({"warmup": -1}, "Received: warmup=-1"),
    ],
)
def test_benchmark_rejects_bad_arguments(tmp_path, kwargs, message):
    path = tmp_path / "model.tflite"
    path.write_bytes(b"not read before the arguments are checked")
    with pytest.raises(ValueError, match=message):
        export.benchmark(path, **kwargs)


def test_benchmark_and_predict_reject_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.tflite' does not exist"):
        export.benchmark(tmp_path / "missing.tflite")
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(b"this is not a flatbuffer" * 4)
    with pytest.raises(ValueError, match="is not a TFLite model"):
        export.benchmark(corrupt)
    with pytest.raises(ValueError, match="is not a TFLite model"):
        export.predict(corrupt, np.zeros((1, 8, 8, 1), "float32"))
    with pytest.raises(TypeError, match="Received: an object of type int"):
        export.predict(7, np.zeros((1, 8, 8, 1), "float32"))


@pytest.mark.slow
def test_mobilenet_v3_round_trip(tmp_path):
    model = tfprune.models.mobilenet_v3("small", seed=0)
    report = export.to_tflite(model, tmp_path / "mobilenet.tflite")
    assert report.max_abs_error < FLOAT_TOLERANCE
    assert report.ops["DEPTHWISE_CONV_2D"] > 0 and report.ops["HARD_SWISH"] > 0


def test_compare_latency_interleaves_the_files_and_returns_a_median_each(trained_cnn, tmp_path, monkeypatch):
    from tfprune.export import measure

    paths = {}
    for name in ("dense", "pruned"):
        paths[name] = tmp_path / f"{name}.tflite"
        export.to_tflite(trained_cnn, paths[name], verify=False)
    medians = export.compare_latency(paths, threads=1, runs=5, warmup=1)
    assert list(medians) == ["dense", "pruned"] and all(value > 0 for value in medians.values())

    # Which file is invoked when: one per round, in the given order, after the warm-up rounds.
    calls = []
    ready = measure._ready_interpreter

    def recording(path, threads, shapes):
        interpreter, delegate = ready(path, threads, shapes)
        invoke = interpreter.invoke

        def logged_invoke():
            calls.append(os.path.basename(path))
            invoke()

        interpreter.invoke = logged_invoke
        return interpreter, delegate

    monkeypatch.setattr(measure, "_ready_interpreter", recording)
    export.compare_latency(paths, runs=3, warmup=1)
    assert calls == ["dense.tflite", "pruned.tflite"] * 4


@pytest.mark.parametrize(
    ("paths", "kwargs", "error", "message"),
    [
        ({}, {}, TypeError, "non-empty dict"),
        (["a.tflite"], {}, TypeError, "Received: an object of type list"),
        ({"a": "a.tflite"}, {"threads": 0}, ValueError, "Received: threads=0"),
        ({"a": "a.tflite"}, {"runs": 0}, ValueError, "Received: runs=0"),
        ({"a": "a.tflite"}, {"warmup": -1}, ValueError, "Received: warmup=-1"),
        ({"a": "missing.tflite"}, {}, FileNotFoundError, "missing.tflite' does not exist"),
    ],
)
def test_compare_latency_rejects_bad_arguments(paths, kwargs, error, message):
    with pytest.raises(error, match=message):
        export.compare_latency(paths, **kwargs)


class _EagerOnly(keras.layers.Layer):
    """Like keras-hub's diffusion scheduler: Python control flow on a tensor's value, fine eagerly only."""

    def call(self, x):
        if keras.ops.convert_to_numpy(keras.ops.max(x)) > 100.0:
            return x * 2.0
        return x

    def compute_output_spec(self, x):
        return keras.KerasTensor(x.shape, x.dtype)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="traces the model into a TensorFlow graph")
def test_a_model_whose_call_cannot_be_traced_into_a_graph_is_refused_in_one_line(tmp_path):
    inputs = keras.Input((4,), name="features")
    model = keras.Model(inputs, keras.layers.Dense(2)(_EagerOnly(name="eager")(inputs)))
    with pytest.raises(ValueError, match=r"^Cannot convert model '\w+' to TFLite: its call cannot be traced into a "
                                         r"TensorFlow graph \(.*\)\.$"):  # fmt: skip
        tfprune.export.to_tflite(model, tmp_path / "model.tflite", verbose=0)
