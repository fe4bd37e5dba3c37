"""keras-hub layers kept whole whose insides prune (issue 28): FNet's encoder block (its
feed-forward units), and hand-written attention with Dense projections (whole heads):
RoFormer V2's, ESM2's, DINOv3's and ViTDet's (SAM's image encoder)."""

import keras
import numpy as np
import pytest
from surgery_helpers import kill_channels

import tfprune

keras_hub = pytest.importorskip("keras_hub")


def _all_outputs(model, x):
    """Every output of `model(x)` as NumPy arrays (a dict of outputs in key order)."""
    return [keras.ops.convert_to_numpy(value) for value in keras.tree.flatten(model(x))]


def _assert_close(got, want, atol):
    for got_value, want_value in zip(got, want, strict=True):
        np.testing.assert_allclose(got_value, want_value, atol=atol, rtol=0)


def _assert_reloads(model, x, path):
    model.save(path)
    _assert_close(_all_outputs(keras.models.load_model(path), x), _all_outputs(model, x), atol=1e-6)


def _dead_removed(flat, group, channels, x, tmp_path, roles=("output", "param")):
    """Removes `channels` of `group` after zeroing their weights: same outputs to 1e-5, reloads to 1e-6."""
    graph = tfprune.graph.build(flat)
    assert graph[group].prunable, graph[group].reason
    kill_channels(flat, graph[group], channels, roles=roles)
    small = tfprune.surgery.remove_channels(flat, {group: list(channels)})
    assert small.count_params() < flat.count_params()
    _assert_close(_all_outputs(small, x), _all_outputs(flat, x), atol=1e-5)
    _assert_reloads(small, x, tmp_path / "small.keras")
    return small


def _tokens(count=2, length=6, vocabulary=30, **extra):
    rng = np.random.default_rng(0)
    return {"token_ids": rng.integers(1, vocabulary, (count, length)).astype("int32"), **extra}


def test_fnet_blocks_prune_their_feed_forward_units_and_keep_the_fourier_mixed_width(tmp_path):
    # FNet's block cannot be inlined (Keras's fft2 refuses a sequence of unknown length);
    # its handler declares the feed-forward units, and the hidden width, which the 2-D
    # Fourier transform mixes, stays.
    keras.utils.set_random_seed(0)
    model = keras_hub.models.FNetBackbone(vocabulary_size=30, num_layers=2, hidden_dim=16, intermediate_dim=32,
                                          max_sequence_length=6)  # fmt: skip
    flat = tfprune.graph.flatten(model)
    graph = tfprune.graph.build(flat)
    units = [group for group in graph if group.name.endswith("intermediate_dense")]
    assert [(group.prunable, group.size) for group in units] == [(True, 32), (True, 32)]
    assert not graph["f_net_layer_0"].prunable and "keeps as one layer" in graph["f_net_layer_0"].reason
    x = _tokens(segment_ids=np.zeros((2, 6), "int32"))
    _dead_removed(flat, units[0].name, [2, 11, 31], x, tmp_path)
    pruned, result = tfprune.prune(model, "l1", rate=0.5)  # refused before: no group could shrink
    assert sorted(result.widths_after.values()) == [16, 16]
    _assert_reloads(pruned, x, tmp_path / "fnet.keras")


def _esm():
    return keras_hub.models.ESM2Backbone(vocabulary_size=30, num_layers=1, num_heads=4, hidden_dim=16,
                                         intermediate_dim=32, max_sequence_length=6), _tokens()  # fmt: skip


def _roformer():
    model = keras_hub.models.RoformerV2Backbone(vocabulary_size=30, num_layers=1, num_heads=4, hidden_dim=16,
                                                intermediate_dim=32, head_size=4)  # fmt: skip
    return model, _tokens(segment_ids=np.zeros((2, 6), "int32"))


def _dinov3():
    model = keras_hub.models.DINOV3Backbone(patch_size=8, num_layers=1, hidden_dim=16, num_heads=4,
                                            intermediate_dim=32, image_shape=(16, 16, 3))  # fmt: skip
    return model, {"pixel_values": np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype("float32")}


def _vitdet():
    # A windowed block (relative position embeddings over 2x2 windows) and a global one.
    model = keras_hub.models.ViTDetBackbone(hidden_size=16, num_layers=2, intermediate_dim=32, num_heads=4,
                                            global_attention_layer_indices=[1], image_shape=(32, 32, 3),
                                            patch_size=8, num_output_channels=8, window_size=2)  # fmt: skip
    return model, np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")


@pytest.mark.parametrize(
    "make, attention_class, rebuilt_as",
    [
        (_esm, "EsmSelfAttention", "EsmSelfAttention"),
        (_roformer, "RoformerAttention", "RoformerAttention"),
        (_dinov3, "DINOV3Attention", "tfprune>DINOV3Attention"),
        (_vitdet, "MultiHeadAttentionWithRelativePE", "tfprune>MultiHeadAttentionWithRelativePE"),
    ],
)
def test_hand_written_attention_prunes_whole_heads(make, attention_class, rebuilt_as, tmp_path):
    keras.utils.set_random_seed(0)
    model, x = make()
    flat = tfprune.graph.flatten(model)
    attention = [layer for layer in flat.layers if type(layer).__name__ == attention_class]
    assert attention
    graph = tfprune.graph.build(flat)
    heads = [group for group in graph if group.heads_of is not None]
    assert {group.heads_of for group in heads} == {layer.name for layer in attention}
    assert all(group.prunable and group.size == 4 for group in heads)
    # A head whose output-projection rows are zero adds nothing: removed, the outputs stay.
    small = _dead_removed(flat, heads[0].name, [1], x, tmp_path, roles=("input",))
    resized = small.get_layer(heads[0].heads_of)
    assert getattr(resized, "num_heads", getattr(resized, "heads", None)) == 3
    assert keras.saving.get_registered_name(type(resized)).endswith(rebuilt_as)
    # Heads that read and write nothing: the same (their query, key and value weights zeroed too).
    _dead_removed(flat, heads[-1].name, [0, 2], x, tmp_path, roles=("output", "param", "input"))
    pruned, result = tfprune.prune(model, "l1", rate=0.3)
    assert all(result.widths_after[group.name] == 3 for group in heads)
    _assert_reloads(pruned, x, tmp_path / "pruned.keras")


def test_the_rebuilt_subclasses_are_known_to_keras_as_soon_as_tfprune_is_imported():
    # A `.keras` file names them `tfprune>...`: loading it must not need a prune first.
    for name in ("DINOV3Attention", "MultiHeadAttentionWithRelativePE"):
        assert keras.saving.get_registered_object(f"tfprune>{name}") is not None


@pytest.mark.slow  # a four-stage neck over a four-layer encoder: about 35 s on 2 cores
def test_depth_anything_fusion_layers_and_head_let_the_neck_width_prune(tmp_path):
    # Its fusion layers and head resize with TensorFlow directly, so they stay whole: the
    # fusion layers' one width (inputs, inner convolutions, outputs) is a group, which the
    # head reads with its first convolution.
    keras.utils.set_random_seed(0)
    encoder = keras_hub.models.DINOV2Backbone(patch_size=8, num_layers=4, hidden_dim=16, num_heads=4,
                                              intermediate_dim=32, image_shape=(48, 48, 3),
                                              position_embedding_shape=(48, 48, 3))  # fmt: skip
    model = keras_hub.models.DepthAnythingBackbone(image_encoder=encoder, reassemble_factors=[4, 2, 1, 0.5],
                                                   neck_hidden_dims=[8, 8, 8, 8], fusion_hidden_dim=8,
                                                   head_hidden_dim=4, head_in_index=-1,
                                                   feature_keys=["stage1", "stage2", "stage3", "stage4"])  # fmt: skip
    flat = tfprune.graph.flatten(model)
    graph = tfprune.graph.build(flat)
    (neck,) = [group for group in graph if any(name.startswith("neck_fusion_stage") for name in group.producers)]
    assert neck.prunable and neck.size == 8
    fused = {member.layer_name for member in neck.members}
    assert {f"neck_fusion_stage_{stage}" for stage in range(4)} | {"head"} <= fused
    x = np.random.default_rng(0).uniform(size=(2, 48, 48, 3)).astype("float32")
    small = _dead_removed(flat, neck.name, [1, 6], x, tmp_path)
    assert small.get_layer("neck_fusion_stage_0").hidden_dim == 6


def test_dinov3_embedding_passes_its_hidden_width_like_dinov2s():
    # Patch convolution, class and register tokens, mask token: all of the hidden width, which
    # then stops only at the backbone's output (a task model's head can read it pruned).
    keras.utils.set_random_seed(0)
    model, _ = _dinov3()
    graph = tfprune.graph.build(tfprune.graph.flatten(model), hidden=True)
    hidden = graph["embeddings"]
    assert not hidden.prunable and "model output" in hidden.reason
    tables = {path.split("/")[-1] for member in hidden.members if member.layer_name == "embeddings"
              for path, _ in member.weights}  # fmt: skip
    assert {"cls_token", "register_tokens", "kernel"} <= tables


def test_family_handlers_are_found_by_class_name_and_a_second_claim_is_refused():
    from tfprune import handlers, handlers_decoders

    key = next(iter(handlers_decoders.BY_CLASS))
    stand_in = type(key[1], (), {"__module__": key[0]})()  # a class of that module and name, keras-hub not imported
    assert handlers.handler_for(stand_in) is handlers_decoders.BY_CLASS[key]
    handlers.register_by_class_name({key: handlers_decoders.BY_CLASS[key]})  # the same handler again: accepted
    with pytest.raises(ValueError, match=f"Two built-in handlers of different types for class '{key[1]}'"):
        handlers.register_by_class_name({key: handlers.Freeze("another")})
