"""The SavedModel rewrites that let the TFLite converter lower keras-hub's slices, int64 abs/sign and rolls.

Each model reproduces, in a few ops, the pattern a keras-hub model failed to
export with before (`CLIPTextEncoder`, `T5Backbone`, the Llama/Gemma
decoders: a padding mask broadcast with `mask[:, None, :, :]` over an unknown
batch and sequence length; `DebertaV3Backbone`: `sign` and `abs` of int64
relative positions; `SwinTransformerBackbone`: `roll` of its windows), and
the file's outputs are compared with Keras's at two sequence lengths.
"""

import doctest
import os

import keras
import numpy as np
import pytest

from tfprune import export
from tfprune.export.convert import _write_saved_model
from tfprune.export.inputs import model_inputs
from tfprune.export.legalize import missing_ops_reason, rewrite_saved_model

TOLERANCE = 1e-5


@keras.saving.register_keras_serializable(package="tfprune_tests")
class _MaskedScores(keras.layers.Layer):
    """An attention-like use of a padding mask, with the slices keras-hub writes.

    `mask[:, None, :, :]` (T5, Llama), `mask[:, None, None, :]` (Moonshine),
    `x[..., None, :]` (an ellipsis before a new axis), `x[None, ..., None, :,
    None]` (new axes on both sides of it) and `x[:, 0, None]` (a dropped axis
    beside a new one), each over a batch and a sequence length that are both
    unknown.
    """

    def call(self, tokens, padding_mask):
        # (batch, length, length): each token's score against each other.
        scores = keras.ops.einsum("bld,bmd->blm", tokens, tokens)
        pair_mask = keras.ops.cast(padding_mask[:, :, None] * padding_mask[:, None, :], "bool")
        heads = keras.ops.where(pair_mask[:, None, :, :], scores[:, None, :, :], -1e4)  # (batch, 1, l, l)
        per_key = keras.ops.cast(padding_mask, "bool")[:, None, None, :]  # (batch, 1, 1, l)
        heads = keras.ops.where(per_key, heads, -2e4)
        rows = tokens[..., None, :]  # (batch, length, 1, width)
        first = tokens[:, 0, None]  # (batch, 1, width)
        # New axes on both sides of an ellipsis: (1, batch, 1, length, 1).
        around = keras.ops.cast(padding_mask, "float32")[None, ..., None, :, None]
        around = around * keras.ops.reshape(keras.ops.arange(3, dtype="float32"), (1, 1, 1, 1, 3))
        return (
            heads[:, 0]
            + keras.ops.sum(rows * first[:, :, None, :], axis=(2, 3))[:, None, :]
            + keras.ops.sum(around, axis=(0, 2, 4))[:, :, None]
        )


def _masked_scores_model():
    tokens = keras.Input((None, 4), name="tokens")
    padding_mask = keras.Input((None,), dtype="int32", name="padding_mask")
    return keras.Model(
        {"tokens": tokens, "padding_mask": padding_mask}, _MaskedScores()(tokens, padding_mask=padding_mask)
    )


def _text_inputs(count, length, seed):
    rng = np.random.default_rng(seed)
    padding_mask = np.ones((count, length), "int32")
    padding_mask[0, length // 2 :] = 0  # a padded sample, so the mask matters
    return {"tokens": rng.normal(size=(count, length, 4)).astype("float32"), "padding_mask": padding_mask}


def _keras_outputs(model, inputs):
    return keras.ops.convert_to_numpy(model(inputs, training=False))


def test_slices_with_new_axes_over_unknown_sizes_export(tmp_path):
    keras.utils.set_random_seed(0)
    model = _masked_scores_model()
    report = export.to_tflite(model, tmp_path / "masked.tflite", sample_inputs=_text_inputs(3, 7, 0), verbose=0)
    assert report.max_abs_error < TOLERANCE
    # The size stays unknown in the file: another sequence length gives Keras's outputs too.
    other = _text_inputs(2, 11, 1)
    (outputs,) = export.predict(report.path, other)
    np.testing.assert_allclose(outputs, _keras_outputs(model, other), atol=TOLERANCE)
    # The new axes are EXPAND_DIMS; a slice that slices nothing once they are inserted is left out.
    assert report.ops.get("EXPAND_DIMS", 0) >= 8
    assert report.ops.get("STRIDED_SLICE", 0) == 2  # the two that drop an axis: `[:, 0, None]`, `heads[:, 0]`


def test_rewrite_keeps_the_saved_model_equivalent(tmp_path):
    keras.utils.set_random_seed(0)
    model = _masked_scores_model()
    directory = str(tmp_path / "saved")
    # `_write_saved_model` rewrites already; the rewrite of a rewritten model finds nothing left.
    _write_saved_model(model, model_inputs(model), directory)
    assert rewrite_saved_model(directory) == {}
    import tensorflow as tf

    serve = tf.saved_model.load(directory).signatures["serving_default"]
    inputs = _text_inputs(2, 5, 2)
    outputs = serve(**{name: tf.constant(value) for name, value in inputs.items()})["output_0"]
    np.testing.assert_allclose(outputs.numpy(), _keras_outputs(model, inputs), atol=TOLERANCE)


@keras.saving.register_keras_serializable(package="tfprune_tests")
class _RelativePositions(keras.layers.Layer):
    """DeBERTa-v3's bucketing of relative positions: `sign` and `abs` of int64 differences."""

    def call(self, tokens):
        length = keras.ops.shape(tokens)[1]
        positions = keras.ops.cast(keras.ops.arange(length), "int64")
        relative = positions[:, None] - positions[None, :]
        buckets = keras.ops.sign(relative) * keras.ops.minimum(keras.ops.abs(relative), 3)
        return tokens[:, :, :1] + keras.ops.cast(buckets, "float32")[None, :, :]


def test_int64_abs_and_sign_export(tmp_path):
    tokens = keras.Input((None, 4), name="tokens")
    model = keras.Model(tokens, _RelativePositions()(tokens))
    sample = np.random.default_rng(0).normal(size=(2, 9, 4)).astype("float32")
    report = export.to_tflite(model, tmp_path / "positions.tflite", sample_inputs=sample, verbose=0)
    assert report.max_abs_error < TOLERANCE
    assert "ABS" not in report.ops and "SIGN" not in report.ops
    # Every bucket -3..3 occurs at length 9, so a wrong sign or magnitude would show.
    assert set(np.unique(np.round(_keras_outputs(model, sample) - sample[:, :, :1]))) == set(range(-3, 4))


def test_constant_roll_exports_as_split_and_concatenation(tmp_path):
    image = keras.Input((6, 5, 3), name="image")
    # Swin's shift (negative, on two axes), a shift past a whole turn, and a whole turn.
    rolled = keras.ops.roll(image, shift=(-2, -2), axis=(1, 2)) + keras.ops.roll(image, shift=8, axis=-2)
    model = keras.Model(image, rolled + keras.ops.roll(image, shift=6, axis=1))
    report = export.to_tflite(model, tmp_path / "rolled.tflite", verbose=0)
    assert report.max_abs_error < TOLERANCE
    assert report.ops["SPLIT_V"] == 3 and report.ops["CONCATENATION"] == 3


@keras.saving.register_keras_serializable(package="tfprune_tests")
class _RollTokens(keras.layers.Layer):
    def call(self, tokens):
        return keras.ops.roll(tokens, shift=1, axis=1)


def test_roll_along_an_unknown_size_is_refused_with_its_reason_and_layer(tmp_path):
    tokens = keras.Input((None, 4), name="tokens")
    model = keras.Model(tokens, _RollTokens(name="shift_tokens")(tokens))
    with pytest.raises(ValueError, match=r"layer '[^']*shift_tokens[^']*' uses tf\.roll .*no built-in kernel"):
        export.to_tflite(model, tmp_path / "rolled.tflite", sample_inputs=np.ones((1, 3, 4), "float32"))
    assert not os.path.exists(tmp_path / "rolled.tflite")


@keras.saving.register_keras_serializable(package="tfprune_tests")
class _FourierMixing(keras.layers.Layer):
    """FNet's token mixing: the real part of a 2-D Fourier transform."""

    def call(self, tokens):
        real, _ = keras.ops.fft2((tokens, keras.ops.zeros_like(tokens)))
        return real


def test_fourier_transform_is_refused_with_its_reason_and_layer(tmp_path):
    tokens = keras.Input((8, 4), name="tokens")
    model = keras.Model(tokens, _FourierMixing(name="fourier_mixing")(tokens))
    with pytest.raises(ValueError, match=r"layer '[^']*fourier_mixing[^']*' uses a 2-D Fourier transform") as raised:
        export.to_tflite(model, tmp_path / "fnet.tflite", verbose=0)
    # One reason: the complex input the transform is built from is not a second one.
    assert str(raised.value).endswith("(TensorFlow op FFT2D).") and "Complex)" not in str(raised.value)


def test_missing_ops_reason_names_ops_and_layers():
    message = (
        'loc(callsite(fused["Svd:", "model_1/svd_layer_1/Svd@__inference_serve_1"] at x)): '
        "error: 'tf.Svd' op is neither a custom op nor a flex op\n"
        'loc(callsite(fused["Roll:", "model_1/block_1/Roll@__inference_serve_1"] at x)): '
        "error: 'tf.Roll' op is neither a custom op nor a flex op\n"
    )
    reason = missing_ops_reason(message)
    assert reason.startswith("layer 'model_1/block_1' uses tf.roll")
    assert "TensorFlow ops ['Svd'] have no TFLite built-in kernel; replace the layers that use them " in reason
    assert reason.endswith("(in 'model_1/svd_layer_1')")
    # Without a location, the op is still named; without any op, there is no reason to give.
    assert missing_ops_reason("error: 'tf.Svd' op is neither a custom op nor a flex op") == (
        "TensorFlow ops ['Svd'] have no TFLite built-in kernel; replace the layers that use them"
    )
    assert missing_ops_reason("some other converter error") is None


def test_docstring_examples_run():
    from tfprune.export import legalize

    results = doctest.testmod(legalize, optionflags=doctest.ELLIPSIS)
    assert results.failed == 0 and results.attempted >= 1


def test_bool_and_unsigned_outputs_are_verified(tmp_path):
    # MoonshineBackbone returns its padding mask (bool) beside its features; verification
    # subtracted the file's outputs from Keras's and failed on bool ones.
    padding_mask = keras.Input((None,), dtype="int32", name="padding_mask")
    is_token = keras.ops.greater(padding_mask, 0)
    as_byte = keras.ops.cast(padding_mask * 3, "uint8")
    model = keras.Model(padding_mask, [is_token, as_byte, keras.ops.cast(padding_mask, "float32") * 0.5])
    sample = np.array([[1, 1, 0], [0, 1, 1]], "int32")
    report = export.to_tflite(model, tmp_path / "mask.tflite", sample_inputs=sample, verbose=0)
    assert report.max_abs_error == 0.0
    assert [output["dtype"] for output in report.outputs] == ["bool", "uint8", "float32"]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_pruned_grouped_query_causal_lm_exports(family, tmp_path):
    # The decoders of issue 29: their padding mask is broadcast over heads with `[:, None, :, :]`.
    keras_hub = pytest.importorskip("keras_hub")
    import tfprune

    keras.utils.set_random_seed(0)
    config = dict(vocabulary_size=50, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=32,
                  intermediate_dim=64)  # fmt: skip
    if family == "llama":
        model = keras_hub.models.LlamaCausalLM(backbone=keras_hub.models.LlamaBackbone(**config), preprocessor=None)
    else:
        backbone = keras_hub.models.GemmaBackbone(**config, head_dim=8)
        model = keras_hub.models.GemmaCausalLM(backbone=backbone, preprocessor=None)
    pruned, _ = tfprune.prune(model, "l1", rate=0.5, targets="heads", verbose=0)
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 50, (2, 7)).astype("int32")
    padding_mask = np.ones_like(tokens)
    padding_mask[1, 5:] = 0
    report = export.to_tflite(pruned, tmp_path / f"{family}.tflite",
                              sample_inputs={"token_ids": tokens, "padding_mask": padding_mask}, verbose=0)  # fmt: skip
    assert report.max_abs_error < 1e-4
    longer = {"token_ids": rng.integers(1, 50, (1, 11)).astype("int32"), "padding_mask": np.ones((1, 11), "int32")}
    (logits,) = export.predict(report.path, longer)
    np.testing.assert_allclose(logits, _keras_outputs(pruned, longer), atol=1e-4)
