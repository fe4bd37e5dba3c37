"""SAM 3's components prune (issue 28): attention heads of `SAM3Attention` / `SAM3RoPEAttention`
(rebuilt as tfprune subclasses); the text encoder, vision neck and mask decoder inline (a traced
tile over the batch or the sequence length, the true output shapes of the sine position encoding
and the mask decoder); the geometry encoder stays whole and its MLP units prune."""

import keras
import numpy as np
import pytest
from surgery_helpers import all_outputs, assert_dead_channels_leave_no_trace

import tfprune

keras_hub = pytest.importorskip("keras_hub")
sam3 = pytest.importorskip("keras_hub.src.models.sam3.sam3_detr_encoder")


def _detr_encoder():
    """SAM 3's DETR encoder over a 2x2 grid and 5 prompt tokens: self- and cross-attention, 4 heads."""
    encoder = sam3.SAM3DetrEncoder(num_layers=1, hidden_dim=16, intermediate_dim=32, num_heads=4)
    vision = keras.Input((2, 2, 16), name="vision")
    text = keras.Input((5, 16), name="text")
    positions = keras.Input((2, 2, 16), name="positions")
    mask = keras.Input((5,), dtype="bool", name="mask")
    outputs = encoder(vision_features=vision, text_features=text, vision_pos_embeds=positions, text_masks=mask)
    model = keras.Model([vision, text, positions, mask], list(outputs))
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(2, 2, 2, 16)).astype("float32"), rng.normal(size=(2, 5, 16)).astype("float32"),
         rng.normal(size=(2, 2, 2, 16)).astype("float32"), np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool)]  # fmt: skip
    return model, x


def _vision_encoder():
    """SAM 3's vision encoder: one global rotary attention block over a 2x2 grid and a three-level neck."""
    from keras_hub.src.models.sam3.sam3_vision_encoder import SAM3VisionEncoder

    encoder = SAM3VisionEncoder(image_shape=(28, 28, 3), patch_size=14, num_layers=1, hidden_dim=16,
                                intermediate_dim=32, num_heads=4, fpn_hidden_dim=16, fpn_scale_factors=[2.0, 1.0, 0.5],
                                pretrain_image_shape=(28, 28, 3), window_size=0, global_attn_indexes=[0])  # fmt: skip
    images = keras.Input((28, 28, 3), name="images")
    features, positions = encoder(images)
    model = keras.Model(images, [*features, *positions])
    return model, np.random.default_rng(0).uniform(size=(2, 28, 28, 3)).astype("float32")


def _heads(graph):
    return [group for group in graph if group.heads_of is not None]


def _dead_heads_leave_no_trace(flat, heads, x, tmp_path, attention_class):
    for group in heads:
        # A head whose output-projection rows are zero adds nothing: removed, the outputs stay (and reload).
        small = assert_dead_channels_leave_no_trace(flat, group.name, [1], x, tmp_path, roles=("input",))
        resized = small.get_layer(group.heads_of)
        assert resized.num_heads == 3 and resized.head_dim == 4
        assert keras.saving.get_registered_name(type(resized)) == f"tfprune>{attention_class}"


def test_sam3_attention_heads_zeroed_are_removed_with_unchanged_outputs(tmp_path):
    keras.utils.set_random_seed(0)
    model, x = _detr_encoder()
    flat = tfprune.graph.flatten(model)
    for got, want in zip(all_outputs(flat, x), all_outputs(model, x), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    attention = [layer for layer in flat.layers if type(layer).__name__ == "SAM3Attention"]
    heads = _heads(tfprune.graph.build(flat))
    assert {group.heads_of for group in heads} == {layer.name for layer in attention} and len(heads) == 2
    assert all(group.prunable and group.size == 4 for group in heads)
    _dead_heads_leave_no_trace(flat, heads, x, tmp_path, "SAM3Attention")
    # Heads that read and write nothing (query, key and value weights zeroed too): the same.
    assert_dead_channels_leave_no_trace(flat, heads[-1].name, [0, 3], x, tmp_path,
                                        roles=("output", "param", "input"))  # fmt: skip


def test_sam3_cross_attention_projects_key_and_value_from_their_own_input():
    model, _ = _detr_encoder()
    flat = tfprune.graph.flatten(model)
    graph = tfprune.graph.build(flat, hidden=True)
    cross = next(layer for layer in flat.layers if layer.name.endswith("cross_attn"))

    def group_reading(projection):
        path = getattr(cross, projection).kernel.path
        return next(group.name for group in graph for member in group.members
                    if member.role == "input" and (path, 0) in member.weights)  # fmt: skip

    assert group_reading("k_proj") == group_reading("v_proj") == "text"
    assert group_reading("q_proj") != "text"


def test_a_pruned_sam3_detr_encoder_keeps_three_of_four_heads_and_reloads(tmp_path):
    keras.utils.set_random_seed(0)
    model, x = _detr_encoder()
    pruned, result = tfprune.prune(model, "l1", rate=0.3, round_to=1)
    heads = [name for name in result.widths_after if name.endswith("_heads")]
    assert len(heads) == 2 and all(result.widths_after[name] == 3 for name in heads)
    assert pruned.count_params() < model.count_params()
    pruned.save(tmp_path / "pruned.keras")
    reloaded = keras.models.load_model(tmp_path / "pruned.keras")
    for got, want in zip(all_outputs(reloaded, x), all_outputs(pruned, x), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def test_sam3_text_encoder_with_a_sequence_of_unknown_length_is_inlined():
    # Its padding mask is tiled over the sequence length (`ops.tile(mask, (1, 1, length, 1))`),
    # recorded as a broadcast that reads the length when the model runs.
    from keras_hub.src.models.sam3.sam3_text_encoder import SAM3TextEncoder

    keras.utils.set_random_seed(0)
    encoder = SAM3TextEncoder(vocabulary_size=20, embedding_dim=16, hidden_dim=16, num_layers=1, num_heads=4,
                              intermediate_dim=32, max_sequence_length=16)  # fmt: skip
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    mask = keras.Input((None,), dtype="int32", name="mask")
    model = keras.Model([tokens, mask], encoder(tokens, mask))
    flat = tfprune.graph.flatten(model)
    assert not any(type(layer).__name__ == "SAM3TextEncoder" for layer in flat.layers)
    for length in (5, 9):
        x = [np.arange(2 * length).reshape(2, length).astype("int32") % 20, np.ones((2, length), "int32")]
        x[1][0, -2:] = 0
        np.testing.assert_allclose(all_outputs(flat, x)[0], all_outputs(model, x)[0], atol=1e-5, rtol=0)


@pytest.mark.slow  # a rotary attention block and a three-level neck, flattened and cut three times: about 30 s
def test_sam3_vision_encoder_rotary_heads_and_neck_channels_prune(tmp_path):
    keras.utils.set_random_seed(0)
    model, x = _vision_encoder()
    flat = tfprune.graph.flatten(model)
    for got, want in zip(all_outputs(flat, x), all_outputs(model, x), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    names = {type(layer).__name__ for layer in flat.layers}
    assert "SAM3VisionNeck" not in names and "SAM3SinePositionEmbedding" in names
    positions = next(layer for layer in flat.layers if type(layer).__name__ == "SAM3SinePositionEmbedding")
    assert keras.saving.get_registered_name(type(positions)) == "tfprune>SAM3SinePositionEmbedding"
    graph = tfprune.graph.build(flat)
    heads = _heads(graph)
    assert [type(flat.get_layer(group.heads_of)).__name__ for group in heads] == ["SAM3RoPEAttention"]
    _dead_heads_leave_no_trace(flat, heads, x, tmp_path, "SAM3RoPEAttention")
    # The 1x1 convolution of a level feeds only its 3x3 convolution: its channels prune.
    inner = next(group for group in graph if group.name.endswith("fpn_layer_0_proj1"))
    assert inner.prunable
    assert_dead_channels_leave_no_trace(flat, inner.name, [2, 5], x, tmp_path)


def test_sam3_mask_decoder_is_inlined_and_its_heads_and_query_embedding_prune(tmp_path):
    # keras-hub declares its masks with `hidden_dim` channels; its call makes one per query.
    from keras_hub.src.models.sam3.sam3_mask_decoder import SAM3MaskDecoder

    keras.utils.set_random_seed(0)
    decoder = SAM3MaskDecoder(num_upsampling_stages=3, hidden_dim=16, num_heads=4)
    queries = keras.Input((6, 16), name="queries")
    features = [keras.Input((size, size, 16), name=f"features_{size}") for size in (8, 4, 2)]
    encoded = keras.Input((4, 16), name="encoded")
    prompt = keras.Input((5, 16), name="prompt")
    prompt_mask = keras.Input((5,), dtype="bool", name="prompt_mask")
    masks, semantic = decoder(decoder_queries=queries, backbone_features=features, encoder_hidden_states=encoded,
                              prompt_features=prompt, prompt_masks=prompt_mask)  # fmt: skip
    model = keras.Model([queries, *features, encoded, prompt, prompt_mask], [masks, semantic])
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(2, *tensor.shape[1:])).astype("float32") for tensor in model.inputs[:-1]]
    x.append(np.array([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]], bool))
    flat = tfprune.graph.flatten(model)
    assert not any(type(layer).__name__ == "SAM3MaskDecoder" for layer in flat.layers)
    assert flat.outputs[0].shape[-1] == 6
    for got, want in zip(all_outputs(flat, x), all_outputs(model, x), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    graph = tfprune.graph.build(flat)
    _dead_heads_leave_no_trace(flat, _heads(graph), x, tmp_path, "SAM3Attention")
    # The query embedding's channels meet the pixel embedding's in `bqc,bhwc->bhwq`: removed from both.
    embedding = next(group for group in graph if group.name.endswith("mask_embedder_layer_2"))
    assert embedding.prunable
    assert_dead_channels_leave_no_trace(flat, embedding.name, [0, 9], x, tmp_path)


def test_the_sam3_subclasses_are_known_to_keras_as_soon_as_tfprune_is_imported():
    for name in ("SAM3Attention", "SAM3RoPEAttention", "SAM3SinePositionEmbedding"):
        assert keras.saving.get_registered_object(f"tfprune>{name}") is not None


def test_sam3_geometry_encoder_kept_whole_drops_mlp_units_dead_in_every_block(tmp_path):
    # Its `ops.cond` keeps it one layer; one `intermediate_dim` sizes the MLPs of both blocks.
    from keras_hub.src.models.sam3.sam3_geometry_encoder import SAM3GeometryEncoder

    keras.utils.set_random_seed(0)
    encoder = SAM3GeometryEncoder(num_layers=2, hidden_dim=16, intermediate_dim=32, num_heads=4, roi_size=2)
    boxes = keras.Input((1, 5), name="boxes")
    labels = keras.Input((1,), dtype="int32", name="labels")
    features = keras.Input((2, 2, 16), name="features")
    positions = keras.Input((2, 2, 16), name="positions")
    masks = keras.ops.not_equal(labels, -10)
    embeddings, mask = encoder(boxes, labels, masks, fpn_hidden_states=features, fpn_position_encodings=positions)
    model = keras.Model([boxes, labels, features, positions], [embeddings, keras.ops.cast(mask, "float32")])
    rng = np.random.default_rng(0)
    boxes_value = np.concatenate([np.zeros((2, 1, 1)), rng.uniform(0.2, 0.6, (2, 1, 4))], axis=-1)
    x = [boxes_value.astype("float32"), np.ones((2, 1), "int32"), rng.normal(size=(2, 2, 2, 16)).astype("float32"),
         rng.normal(size=(2, 2, 2, 16)).astype("float32")]  # fmt: skip
    graph = tfprune.graph.build(model)
    units = next(group for group in graph if group.name.endswith("_mlp_units"))
    assert units.size == 32 and units.prunable
    assert "`ops.cond`" in graph[encoder.name].reason
    small = assert_dead_channels_leave_no_trace(model, units.name, [3, 7, 30], x, tmp_path, roles=("input",))
    rebuilt = next(layer for layer in small.layers if type(layer).__name__ == "SAM3GeometryEncoder")
    assert rebuilt.intermediate_dim == 29
