"""The keras-hub zoo: every vision backbone keras-hub 0.32 builds offline, plus a task model.

Each model is built from its constructor with a small config (random weights,
32x32 inputs, see `keras_hub_models.py`). `tfprune.prune` must inline it (the
blocks are subclassed layers, the task model nests its backbone), compute
what the original computes before any channel goes, remove ~30% of the
channels, and give a model that runs, reloads from `.keras` and converts to
LiteRT with the verified error under 1e-4. The ViT backbone prunes half its
attention heads and MLP units; its patch-embedding layer writes a config its
own constructor refuses, which tfprune's copy repairs so the result reloads.
The README's keras-hub table is this file.
"""

import keras
import numpy as np
import pytest
from keras_hub_models import BUILDERS

import tfprune

keras_hub = pytest.importorskip("keras_hub", reason="install the `keras-hub` extra")

PRUNED = [
    "ResNetV1", "ResNetV2", "EfficientNetV1", "EfficientNetV2", "DenseNet", "VGG", "CSPNet",
    "MobileNet", "Xception", "HGNetV2", "ResNetImageClassifier",
]  # fmt: skip


def sample():
    return np.random.default_rng(0).uniform(0.0, 1.0, (2, 32, 32, 3)).astype("float32")


def outputs(model, x):
    return [keras.ops.convert_to_numpy(value) for value in keras.tree.flatten(model(x, training=False))]


@pytest.mark.parametrize("name", PRUNED)
def test_keras_hub_model_is_pruned_run_saved_loaded_and_exported(name, tmp_path):
    keras.utils.set_random_seed(0)
    model = BUILDERS[name](keras_hub)
    x = sample()
    expected = outputs(model, x)
    flat = tfprune.graph.flatten(model)
    assert len(outputs(flat, x)) == len(expected)
    for got, want in zip(outputs(flat, x), expected):  # inlining changes nothing
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    small, result = tfprune.prune(model, criterion="l1", rate=0.3)
    assert result.params_reduction > 0.02, result
    assert small.count_params() < model.count_params()
    pruned = outputs(small, x)
    assert [value.shape for value in pruned] == [value.shape for value in expected]
    assert all(np.isfinite(value).all() for value in pruned)
    small.save(tmp_path / "small.keras")
    reloaded = keras.models.load_model(tmp_path / "small.keras")
    for got, want in zip(outputs(reloaded, x), pruned):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    report = tfprune.export.to_tflite(small, tmp_path / "small.tflite", sample_inputs=x)
    assert report.max_abs_error < 1e-4, report


def test_vit_backbone_prunes_half_its_heads_and_mlp_units_reloads_and_exports(tmp_path):
    keras.utils.set_random_seed(0)
    model = BUILDERS["ViT"](keras_hub)
    x = sample()
    with pytest.warns(tfprune.graph.ConfigRepairWarning, match="'num_patches', 'num_positions'"):
        small, result = tfprune.prune(model, criterion="l1", rate=0.5, round_to=1, verbose=0)
    assert result.widths_after == {
        "vit_encoder_transformer_block_1_mha_heads": 2, "vit_encoder_transformer_block_1_mlp_dense_1": 16,
        "vit_encoder_transformer_block_2_mha_heads": 2, "vit_encoder_transformer_block_2_mlp_dense_1": 16,
    }  # fmt: skip
    pruned = outputs(small, x)
    assert all(np.isfinite(value).all() for value in pruned)
    report = tfprune.export.to_tflite(small, tmp_path / "vit.tflite", sample_inputs=x, verbose=0)
    assert report.max_abs_error < 1e-4
    # keras-hub's ViTPatchingAndEmbedding.get_config writes num_patches and
    # num_positions, which its constructor refuses; tfprune's copy leaves them out.
    small.save(tmp_path / "vit.keras")
    reloaded = keras.models.load_model(tmp_path / "vit.keras")
    for got, want in zip(outputs(reloaded, x), pruned):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    assert "num_patches" in model.get_layer("vit_patching_and_embedding").get_config()  # untouched


@pytest.mark.parametrize("version", ["dinov2", "dinov3"])
def test_dino_layer_scale_is_sliced_with_the_channels_it_scales(version, tmp_path):
    # DINOv2/v3 scale each channel of a residual branch by a learned table (`lambda1`).
    module = __import__(f"keras_hub.src.models.{version}.{version}_layers", fromlist=["_"])
    scale = getattr(module, f"{version.upper()}LayerScale")(hidden_dim=12, init_values=0.5, name="scale")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 8))
    x = keras.layers.Dense(12, name="fc")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(scale(x)))
    kernel, bias = model.get_layer("fc").get_weights()
    kernel[:, ::2], bias[::2] = 0.0, 0.0  # six dead channels: removing them changes nothing
    model.get_layer("fc").set_weights([kernel, bias])
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    small, result = tfprune.prune(model, "l1", rate=0.5, round_to=1, verbose=0)
    assert result.widths_after == {"fc": 6}
    np.testing.assert_allclose(outputs(small, x)[0], outputs(model, x)[0], atol=1e-6)
    assert small.get_layer("scale").get_config()["hidden_dim"] == 6
    small.save(tmp_path / "small.keras")
    np.testing.assert_allclose(outputs(keras.models.load_model(tmp_path / "small.keras"), x)[0],
                               outputs(small, x)[0], atol=1e-6)  # fmt: skip


def test_image_classifier_prunes_its_backbone_and_still_trains(tmp_path):
    keras.utils.set_random_seed(0)
    classifier = BUILDERS["ResNetImageClassifier"](keras_hub)
    backbone_convs = [layer.name for layer in classifier.backbone.layers if isinstance(layer, keras.layers.Conv2D)]
    small, result = tfprune.prune(classifier, criterion="l1", rate=0.5)
    # The backbone's convolutions were inlined and shrunk, not only the head.
    shrunk = [name for name in backbone_convs if result.widths_after.get(name, 0) < result.widths_before.get(name, 0)]
    assert shrunk, result.widths_after
    input_names = [tensor._keras_history.operation.name for tensor in classifier.inputs]
    assert [tensor._keras_history.operation.name for tensor in small.inputs] == input_names
    rng = np.random.default_rng(1)
    x = rng.uniform(0.0, 1.0, (32, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, 32)
    small.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = small.evaluate(x, y, verbose=0)
    history = small.fit(x, y, epochs=5, batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert small.evaluate(x, y, verbose=0) < before


def test_sparsify_and_magnitude_pruning_reach_inside_a_task_model():
    classifier = BUILDERS["ResNetImageClassifier"](keras_hub)
    sparse = tfprune.sparsify(classifier)
    convertible = [layer.name for layer in tfprune.graph.flatten(classifier).layers
                   if type(layer) in (keras.layers.Conv2D, keras.layers.Dense)]  # fmt: skip
    assert len(convertible) > 2  # the backbone's convolutions and the head
    assert sorted(layer.name for layer in tfprune.sparsity.str_layers(sparse)) == sorted(convertible)
    masked = tfprune.prune_low_magnitude(classifier)
    wrapped = tfprune.magnitude.pruning_wrappers(masked)
    covered = sum(wrapper.layer.count_params() for wrapper in wrapped)
    assert covered > 0.9 * classifier.count_params()


def test_keras_hub_mobilenet_blocks_are_inlined_without_sharing_weights():
    model = BUILDERS["MobileNet"](keras_hub)
    before = [keras.ops.convert_to_numpy(weight).copy() for weight in model.weights]
    flat = tfprune.graph.flatten(model)
    assert not any(tfprune.graph.is_composite(layer) for layer in flat.layers)
    original = {id(weight) for weight in model.weights}
    assert not any(id(weight) in original for weight in flat.weights)
    for weight in flat.weights:
        weight.assign(keras.ops.zeros_like(weight))
    for weight, value in zip(model.weights, before):  # the user's model is untouched
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(weight), value)


def test_vit_image_classifier_prunes_its_hidden_width_reloads_and_exports(tmp_path):
    # The hidden width runs from the patch embedding through every residual add,
    # LayerNormalization and attention projection to the classifier's head.
    keras.utils.set_random_seed(0)
    classifier = keras_hub.models.ViTImageClassifier(BUILDERS["ViT"](keras_hub), num_classes=4)
    x = sample()
    with pytest.warns(tfprune.graph.ConfigRepairWarning):
        small, result = tfprune.prune(classifier, "l1", rate=0.5, targets="hidden", round_to=1, verbose=0)
    assert result.widths_before == {"vit_patching_and_embedding": 16}
    assert result.widths_after == {"vit_patching_and_embedding": 8}
    assert len(result.renormalized) == 5  # two per encoder block and the final one
    flat = tfprune.graph.flatten(small)
    assert flat.get_layer("vit_patching_and_embedding").patch_embedding.filters == 8
    assert small.count_params() < 0.6 * classifier.count_params()
    pruned = outputs(small, x)
    assert pruned[0].shape == (2, 4) and np.isfinite(pruned[0]).all()
    small.save(tmp_path / "vit.keras")
    reloaded = keras.models.load_model(tmp_path / "vit.keras")
    np.testing.assert_allclose(outputs(reloaded, x)[0], pruned[0], atol=1e-6, rtol=0)
    report = tfprune.export.to_tflite(small, tmp_path / "vit.tflite", sample_inputs=x, verbose=0)
    assert report.max_abs_error < 1e-4, report


def test_vit_analysis_counts_the_patch_embedding_as_its_convolution():
    model = BUILDERS["ViT"](keras_hub)
    analysis = tfprune.analyze(model)
    assert analysis.complete
    inputs = keras.Input((32, 32, 3))
    convolution = keras.Model(inputs, keras.layers.Conv2D(16, 8, strides=8)(inputs))
    record = next(record for record in analysis.layers if record.name == "vit_patching_and_embedding")
    assert record.macs == tfprune.analyze(convolution).macs == 16 * 8 * 8 * 3 * 16


@pytest.mark.parametrize("targets, widths", [
    ("all", {"enc1_self_attention_layer_heads": 2, "enc1_feedforward_intermediate_dense": 16,
             "enc2_self_attention_layer_heads": 2, "enc2_feedforward_intermediate_dense": 16}),
    ("hidden", {"embed": 8}),
])  # fmt: skip
def test_keras_hub_transformer_encoders_are_inlined_and_pruned(targets, widths, tmp_path):
    # keras_hub.layers.TransformerEncoder is a composite layer around a
    # MultiHeadAttention subclass, LayerNormalizations and a Dense MLP.
    keras.utils.set_random_seed(0)
    tokens = keras.Input((10, 16), name="tokens")
    x = keras.layers.Dense(16, name="embed")(tokens)
    for name in ("enc1", "enc2"):
        x = keras_hub.layers.TransformerEncoder(intermediate_dim=32, num_heads=4, name=name)(x)
    model = keras.Model(tokens, keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling1D()(x)))
    x = np.random.default_rng(0).normal(size=(2, 10, 16)).astype("float32")
    small, result = tfprune.prune(model, "l1", rate=0.5, targets=targets, round_to=1, verbose=0)
    assert result.widths_after == widths
    assert result.macs_reduction > 0.2
    pruned = outputs(small, x)[0]
    small.save(tmp_path / "encoders.keras")
    np.testing.assert_allclose(outputs(keras.models.load_model(tmp_path / "encoders.keras"), x)[0], pruned, atol=1e-6)
    report = tfprune.export.to_tflite(small, tmp_path / "encoders.tflite", sample_inputs=x, verbose=0)
    assert report.max_abs_error < 1e-4, report


def _bert(keras_hub):
    return keras_hub.models.BertBackbone(vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16,
                                         intermediate_dim=32, max_sequence_length=12)  # fmt: skip


def _text_inputs(count=2, length=12):
    rng = np.random.default_rng(0)
    return {"token_ids": rng.integers(1, 50, (count, length)).astype("int32"),
            "padding_mask": np.ones((count, length), "int32"), "segment_ids": np.zeros((count, length), "int32")}  # fmt: skip


def test_bert_text_classifier_prunes_heads_mlp_and_hidden_width_and_reloads(tmp_path):
    # ReversibleEmbedding, keras-hub's PositionEmbedding and gelu_approximate, a
    # padding mask, three inputs; LiteRT export takes single-input models only.
    keras.utils.set_random_seed(0)
    classifier = keras_hub.models.BertTextClassifier(_bert(keras_hub), num_classes=2, preprocessor=None)
    x = _text_inputs()
    small, result = tfprune.prune(classifier, "l1", rate=0.5, round_to=1, verbose=0)
    assert result.widths_after == {
        "transformer_layer_0_self_attention_layer_heads": 1, "transformer_layer_0_feedforward_intermediate_dense": 16,
        "transformer_layer_1_self_attention_layer_heads": 1, "transformer_layer_1_feedforward_intermediate_dense": 16,
        "pooled_dense": 8,
    }  # fmt: skip
    hidden, result = tfprune.prune(classifier, "l1", rate=0.5, targets="hidden", round_to=1, verbose=0)
    assert result.widths_after == {"token_embedding": 8} and len(result.renormalized) == 5
    for pruned in (small, hidden):
        values = keras.ops.convert_to_numpy(pruned(x))
        assert values.shape == (2, 2) and np.isfinite(values).all()
        pruned.save(tmp_path / "bert.keras")
        reloaded = keras.ops.convert_to_numpy(keras.models.load_model(tmp_path / "bert.keras")(x))
        np.testing.assert_allclose(reloaded, values, atol=1e-6)


def test_gpt2_backbone_prunes_through_its_causal_decoder_layer():
    # Its TransformerDecoder builds a causal mask from the sequence length: inlined for any length
    # (tests/test_decoders.py has the decoder language models).
    model = keras_hub.models.GPT2Backbone(vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=16,
                                          intermediate_dim=32, max_sequence_length=12)  # fmt: skip
    small, result = tfprune.prune(model, "l1", rate=0.5, round_to=1, verbose=0)
    assert result.widths_after == {"transformer_layer_0_self_attention_heads": 1,
                                   "transformer_layer_0_feedforward_intermediate_dense": 16}  # fmt: skip


@pytest.mark.parametrize("module, name", [
    ("keras_hub.src.layers.modeling.cached_multi_head_attention", "CachedMultiHeadAttention"),
    ("keras_hub.src.models.whisper.whisper_cached_multi_head_attention", "WhisperCachedMultiHeadAttention"),
])  # fmt: skip
def test_cached_attention_layers_lose_heads_like_multi_head_attention(module, name, tmp_path):
    # Called without a cache (as in a functional graph) they are MultiHeadAttention.
    keras.utils.set_random_seed(0)
    attention = getattr(__import__(module, fromlist=[name]), name)(num_heads=4, key_dim=4, name="mha")
    tokens = keras.Input((6, 16))
    x = keras.layers.Dense(16, name="embed")(tokens)
    x = keras.layers.Add()([x, attention(x, x)])
    model = keras.Model(tokens, keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling1D()(x)))
    assert tfprune.graph.build(model)["mha_heads"].prunable
    kernel = keras.ops.convert_to_numpy(attention._output_dense.kernel).copy()
    kernel[[1, 3]] = 0.0  # heads 1 and 3 add nothing to the output
    attention._output_dense.kernel.assign(kernel)
    small = tfprune.surgery.remove_channels(model, {"mha_heads": [1, 3]})
    assert type(small.get_layer("mha")).__name__ == name and small.get_layer("mha").num_heads == 2
    x = np.random.default_rng(0).normal(size=(2, 6, 16)).astype("float32")
    np.testing.assert_allclose(outputs(small, x)[0], outputs(model, x)[0], atol=1e-5)
    small.save(tmp_path / "small.keras")
    np.testing.assert_allclose(outputs(keras.models.load_model(tmp_path / "small.keras"), x)[0],
                               outputs(small, x)[0], atol=1e-6)  # fmt: skip
