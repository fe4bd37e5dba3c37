"""Export of models with several inputs, unknown sizes and integer inputs.

Inputs are matched by name between the data, the Keras model and the
`.tflite` signature. The models here order their inputs differently from the
file's signature, and two inputs share shape and dtype (token ids and a
padding mask), so a match by position would show as a large error.
"""

import doctest
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfprune
from tfprune import cli, export
from tfprune.export.inputs import ModelInput, as_batches, model_inputs, random_batch

FLOAT_TOLERANCE = 1e-5
VOCABULARY = 20


def _text_model(as_dict=True):
    """Token ids and a padding mask of any length, plus three float features."""
    token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    padding_mask = keras.Input((None,), dtype="int32", name="padding_mask")
    features = keras.Input((3,), name="features")
    embedded = keras.layers.Embedding(VOCABULARY, 8, name="embedding")(token_ids)
    mask = keras.ops.expand_dims(keras.ops.cast(padding_mask, "float32"), -1)
    # A masked sum (a masked mean's division runs badly in TFLite's int8 DIV kernel).
    pooled = keras.ops.sum(embedded * mask, axis=1)
    hidden = keras.layers.Concatenate()([pooled, keras.layers.Dense(8, name="features_dense")(features)])
    outputs = keras.layers.Dense(3, name="logits")(keras.layers.Activation("tanh")(hidden))
    if as_dict:
        inputs = {"token_ids": token_ids, "padding_mask": padding_mask, "features": features}
    else:
        inputs = [token_ids, padding_mask, features]  # not the signature's alphabetical order
    return keras.Model(inputs, outputs, name="text")


def _texts(count, length, seed=0):
    random = np.random.default_rng(seed)
    padding_mask = np.ones((count, length), "int32")
    for row in range(count):
        padding_mask[row, random.integers(1, length + 1) :] = 0
    return {
        "token_ids": random.integers(1, VOCABULARY, (count, length)).astype("int32"),
        "padding_mask": padding_mask,
        "features": random.normal(size=(count, 3)).astype("float32"),
    }


def _keras_outputs(model, inputs):
    return keras.ops.convert_to_numpy(model(inputs, training=False))


@pytest.fixture(scope="module")
def text_export(tmp_path_factory):
    """The dict-input text model and its float32 export, verified on 16 texts of length 12."""
    keras.utils.set_random_seed(0)
    model = _text_model()
    path = tmp_path_factory.mktemp("text") / "text.tflite"
    report = export.to_tflite(model, path, sample_inputs=_texts(16, 12), verbose=0)
    return model, report


def test_dict_inputs_are_named_in_the_file_and_the_length_stays_dynamic(text_export):
    model, report = text_export
    assert report.max_abs_error < FLOAT_TOLERANCE and report.num_samples == 16
    assert sorted((tensor["name"], tensor["shape"], tensor["dtype"]) for tensor in report.inputs) == [
        ("features", [-1, 3], "float32"),
        ("padding_mask", [-1, -1], "int32"),
        ("token_ids", [-1, -1], "int32"),
    ]
    # The file runs texts of another length, and a dict's key order does not matter.
    texts = _texts(5, 7, seed=1)
    shuffled = {name: texts[name] for name in ("padding_mask", "features", "token_ids")}
    (outputs,) = export.predict(report.path, shuffled)
    np.testing.assert_allclose(outputs, _keras_outputs(model, texts), atol=FLOAT_TOLERANCE)


def test_list_inputs_and_a_dataset_of_padded_batches_are_matched_by_name(tmp_path):
    keras.utils.set_random_seed(0)
    model = _text_model(as_dict=False)
    assert [item.name for item in model_inputs(model)] == ["token_ids", "padding_mask", "features"]
    long_texts, short_texts = _texts(8, 12), _texts(6, 5, seed=1)
    labels = np.zeros(8, "int32")
    # (inputs, labels) batches as fit takes them, padded per batch: two lengths.
    dataset = tf.data.Dataset.from_tensor_slices((long_texts, labels)).batch(4).concatenate(
        tf.data.Dataset.from_tensor_slices((short_texts, labels[:6])).batch(4)
    )
    batches = as_batches(dataset, model_inputs(model), "sample_inputs", 4096)
    assert [batch["token_ids"].shape for batch in batches] == [(8, 12), (6, 5)]

    report = export.to_tflite(model, tmp_path / "list.tflite", sample_inputs=dataset, verbose=0)
    assert report.num_samples == 14 and report.max_abs_error < FLOAT_TOLERANCE
    # A list is read in model.inputs order; the file is fed by name.
    order = ["token_ids", "padding_mask", "features"]
    listed = as_batches([short_texts[name] for name in order], model_inputs(model), "sample_inputs", 4096)
    np.testing.assert_array_equal(listed[0]["padding_mask"], short_texts["padding_mask"])
    (outputs,) = export.predict(report.path, short_texts)
    expected = _keras_outputs(model, [short_texts[name] for name in order])
    np.testing.assert_allclose(outputs, expected, atol=FLOAT_TOLERANCE)
    # Fed by position in the signature's (alphabetical) order instead, the ids would read the mask.
    swapped = dict(short_texts, token_ids=short_texts["padding_mask"], padding_mask=short_texts["token_ids"])
    assert np.max(np.abs(export.predict(report.path, swapped)[0] - expected)) > 1e-3


@pytest.mark.parametrize(("quantize", "tolerance"), [("dynamic", 0.05), ("float16", 0.01), ("int8", 0.25)])
def test_quantized_exports_of_a_multi_input_model(tmp_path, quantize, tolerance):
    keras.utils.set_random_seed(0)
    model = _text_model()
    # Unbatched dict elements, as from_tensor_slices gives them: calibrated one text at a time.
    calibration = tf.data.Dataset.from_tensor_slices(_texts(64, 12, seed=2))
    report = export.to_tflite(
        model,
        tmp_path / f"{quantize}.tflite",
        quantize=quantize,
        representative_data=calibration if quantize == "int8" else None,
        sample_inputs=_texts(32, 12),
        verbose=0,
    )
    assert report.max_abs_error < tolerance
    assert report.top1_agreement >= 0.9
    dtypes = {tensor["name"]: tensor["dtype"] for tensor in report.inputs}
    assert dtypes == {"features": "float32", "padding_mask": "int32", "token_ids": "int32"}
    if quantize == "int8":
        assert report.ops["QUANTIZE"] >= 1 and report.outputs[0]["dtype"] == "float32"


def test_uint8_input_verifies_on_random_pixels(tmp_path):
    pixels = keras.Input((8, 8, 3), dtype="uint8", name="pixels")
    x = keras.layers.Rescaling(1 / 255)(pixels)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(x)
    model = keras.Model(pixels, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)))

    report = export.to_tflite(model, tmp_path / "pixels.tflite", verbose=0)

    assert report.inputs[0]["dtype"] == "uint8" and report.num_samples == export.RANDOM_SAMPLES
    assert report.max_abs_error < FLOAT_TOLERANCE


def test_random_inputs_are_valid_for_any_vocabulary():
    inputs = model_inputs(_text_model()) + [ModelInput("pixels", "pixels", (None, 4), "uint8")]
    batch = random_batch(inputs, 16, shapes={"token_ids": (5,), "padding_mask": (5,)})
    assert batch["token_ids"].shape == (16, 5) and not batch["token_ids"].any()  # id 0 exists in any vocabulary
    assert batch["padding_mask"].dtype == np.int32 and batch["padding_mask"].all()
    assert 0 <= batch["features"].min() and batch["features"].max() < 1
    assert batch["pixels"].dtype == np.uint8 and batch["pixels"].max() > 200


def test_model_inputs_are_named_by_key_or_input_layer_with_distinct_signature_names():
    by_key = model_inputs(_text_model())
    assert {(item.name, item.shape, item.dtype) for item in by_key} == {
        ("token_ids", (None, None), "int32"), ("padding_mask", (None, None), "int32"), ("features", (None, 3), "float32")
    }  # fmt: skip
    assert all(item.signature_name == item.name for item in by_key)
    # Characters a signature refuses become `_`, a leading `_` goes, and a clash gets `_` appended.
    spaced, underscored, hidden = (keras.Input((2,), name=name) for name in ("pixel values", "pixel_values", "_hidden"))
    model = keras.Model([spaced, underscored, hidden], keras.layers.Add()([spaced, underscored, hidden]))
    assert [(item.name, item.signature_name) for item in model_inputs(model)] == [
        ("pixel values", "pixel_values"), ("pixel_values", "pixel_values_"), ("_hidden", "hidden")
    ]  # fmt: skip
    sequential = keras.Sequential([keras.Input((4,), name="features"), keras.layers.Dense(2)])
    assert model_inputs(sequential) == [ModelInput("features", "features", (None, 4), "float32")]


def test_model_inputs_refuses_inputs_of_the_same_name():
    # A dict key and a nested keras.Input both named 'x': data could not tell them apart.
    keyed, nested = keras.Input((2,), name="y"), keras.Input((2,), name="x")
    with pytest.warns(UserWarning, match="all keys in the dict must match"):  # Keras's own advice
        model = keras.Model({"x": keyed, "more": [nested]}, keras.layers.Add()([keyed, nested]))
    with pytest.raises(ValueError, match=r"do not have distinct names.*Received: inputs named \['x', 'x'\]"):
        model_inputs(model)


def test_as_batches_keeps_at_most_the_limit_in_the_inputs_dtypes():
    inputs = model_inputs(_text_model())
    texts = {name: values.astype("int64") for name, values in _texts(10, 6).items()}
    (batch,) = as_batches(texts, inputs, "data", 4)
    assert {name: (values.shape, str(values.dtype)) for name, values in batch.items()} == {
        "token_ids": ((4, 6), "int32"), "padding_mask": ((4, 6), "int32"), "features": ((4, 3), "float32")
    }  # fmt: skip
    np.testing.assert_array_equal(batch["token_ids"], texts["token_ids"][:4])
    with pytest.raises(ValueError, match=r"`data` is an empty tf.data.Dataset"):
        as_batches(tf.data.Dataset.from_tensor_slices(texts).take(0), inputs, "data", 4)


def test_random_batch_refuses_unknown_sizes_it_is_not_given():
    inputs = model_inputs(_text_model())
    with pytest.raises(ValueError, match=r"shape for \['padding_mask'\]\. Received: .*shapes=\{'token_ids': \(5,\)\}"):
        random_batch(inputs, 2, shapes={"token_ids": (5,)})


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"sample_inputs": np.zeros((4, 12), "int32")}, TypeError,
         r"has 3 inputs .*give `sample_inputs` as a dict name -> array"),
        ({"sample_inputs": {"token_ids": np.zeros((4, 12)), "padding_mask": np.ones((4, 12))}}, ValueError,
         r"no array for \['features'\]"),
        ({"sample_inputs": dict(_texts(4, 12), label=np.zeros(4))}, ValueError, r"keys that name no input: \['label'\]"),
        ({"sample_inputs": [np.zeros((4, 12)), np.ones((4, 12))]}, TypeError, "Received: a list of length 2"),
        ({"sample_inputs": dict(_texts(4, 12), features=np.zeros((3, 3)))}, ValueError,
         "same number of samples for every input"),
        ({"sample_inputs": dict(_texts(4, 12), features=np.zeros((4, 2)))}, ValueError,
         r"input 'features' of shape \(None, 3\).*Received: sample_inputs\['features'\] with shape \(4, 2\)"),
        ({}, ValueError, r"random verification inputs for input 'padding_mask' of shape \(None, None\).*`sample_inputs`"),
        ({"quantize": "int8"}, ValueError, "needs `representative_data`"),
        ({"quantize": "int8", "representative_data": {"token_ids": np.zeros((4, 12))}}, ValueError,
         r"`representative_data` must map each input name"),
    ],
)  # fmt: skip
def test_multi_input_refusals_name_the_argument_and_write_nothing(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        export.to_tflite(_text_model(), tmp_path / "text.tflite", verbose=0, **kwargs)
    assert os.listdir(tmp_path) == []


def test_predict_feeds_a_multi_input_file_by_name_only(text_export):
    _, report = text_export
    with pytest.raises(ValueError, match=r"has 3 inputs, \['features', 'padding_mask', 'token_ids'\]; pass"):
        export.predict(report.path, np.zeros((2, 12), "int32"))
    with pytest.raises(ValueError, match=r"Received: inputs with keys \['features', 'ids', 'padding_mask'\]"):
        texts = _texts(2, 12)
        export.predict(report.path, {"ids": texts.pop("token_ids"), **texts})


def test_benchmark_needs_the_sizes_a_file_leaves_dynamic(text_export):
    _, report = text_export
    with pytest.raises(ValueError, match=r"Input 'padding_mask' .* has dynamic sizes; pass input_shapes="):
        export.benchmark(report.path, threads=(1,), runs=2)
    timed = export.benchmark(
        report.path, threads=(1,), runs=2, warmup=1, input_shapes={"token_ids": (12,), "padding_mask": (12,)}
    )
    assert sorted(timed.input_shapes) == [[1, 3], [1, 12], [1, 12]]
    assert timed.latency[0]["median_ms"] > 0


def test_docstring_examples_run(tmp_path, monkeypatch):
    from tfprune.export import convert, inputs, verify

    monkeypatch.chdir(tmp_path)
    for module in (convert, inputs, verify):
        results = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert results.failed == 0 and results.attempted > 0, module.__name__


def _distil_bert_classifier(keras_hub):
    backbone = keras_hub.models.DistilBertBackbone(
        vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=12
    )
    return keras_hub.models.DistilBertTextClassifier(backbone, num_classes=2, preprocessor=None)


def _token_inputs(count=8, length=12, segments=False):
    random = np.random.default_rng(0)
    inputs = {"token_ids": random.integers(1, 50, (count, length)).astype("int32"),
              "padding_mask": np.ones((count, length), "int32")}  # fmt: skip
    inputs["padding_mask"][: count // 2, length - 4 :] = 0
    if segments:
        inputs["segment_ids"] = (np.arange(length) >= length // 2).astype("int32")[None].repeat(count, 0)
    return inputs


@pytest.fixture(scope="module")
def distil_bert():
    keras_hub = pytest.importorskip("keras_hub", reason="install the `keras-hub` extra")
    keras.utils.set_random_seed(0)
    classifier = _distil_bert_classifier(keras_hub)
    pruned, _ = tfprune.prune(classifier, "l1", rate=0.5, round_to=1, verbose=0)
    return {"dense": classifier, "pruned": pruned}


@pytest.mark.parametrize("kind", ["dense", "pruned"])
def test_distil_bert_classifier_exports_and_verifies_from_python(distil_bert, kind, tmp_path):
    model = distil_bert[kind]
    report = export.to_tflite(model, tmp_path / "distil_bert.tflite", sample_inputs=_token_inputs(), verbose=0)
    assert report.max_abs_error < 1e-4 and report.top1_agreement == 1.0
    assert sorted(tensor["name"] for tensor in report.inputs) == ["padding_mask", "token_ids"]
    assert report.outputs[0]["shape"] == [-1, 2]


def test_distil_bert_classifier_exports_and_verifies_from_the_cli(distil_bert, tmp_path, capsys):
    dense_path, pruned_path = tmp_path / "distil_bert.keras", tmp_path / "small.keras"
    distil_bert["dense"].save(dense_path)
    arguments = ["export", str(dense_path), "-o", str(tmp_path / "dense.tflite"), "--json",
                 "--input-shape", "token_ids=12", "padding_mask=12"]  # fmt: skip
    assert cli.main(arguments) == 0
    dense = json.loads(capsys.readouterr().out)
    assert dense["max_abs_error"] < 1e-4 and dense["num_samples"] == export.RANDOM_SAMPLES
    # Pruned by the command line too, then verified on real token ids from an .npz file.
    arguments = ["prune", str(dense_path), "--criterion", "l1", "--rate", "0.5", "--round-to", "1",
                 "-o", str(pruned_path), "--json"]  # fmt: skip
    assert cli.main(arguments) == 0
    assert json.loads(capsys.readouterr().out)["params_after"] == distil_bert["pruned"].count_params()
    np.savez(tmp_path / "texts.npz", **_token_inputs())
    arguments = ["export", str(pruned_path), "-o", str(tmp_path / "pruned.tflite"), "--json",
                 "--sample-inputs", str(tmp_path / "texts.npz")]  # fmt: skip
    assert cli.main(arguments) == 0
    pruned = json.loads(capsys.readouterr().out)
    assert pruned["max_abs_error"] < 1e-4 and pruned["num_samples"] == 8
    assert pruned["size_bytes"] < dense["size_bytes"]


def test_bert_backbone_with_three_inputs_and_two_outputs_exports(tmp_path):
    keras_hub = pytest.importorskip("keras_hub", reason="install the `keras-hub` extra")
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=12
    )
    report = export.to_tflite(
        backbone, tmp_path / "bert.tflite", sample_inputs=_token_inputs(segments=True), verbose=0
    )
    assert report.max_abs_error < 1e-4
    assert sorted(tensor["name"] for tensor in report.inputs) == ["padding_mask", "segment_ids", "token_ids"]
    # Outputs in the order of keras.tree.flatten: pooled_output, sequence_output.
    assert [tensor["shape"] for tensor in report.outputs] == [[-1, 16], [-1, -1, 16]]
