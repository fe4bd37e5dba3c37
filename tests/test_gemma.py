"""Gemma 4 and Gemma 3n decoders (keras-hub): dead heads and MLP units pruned, cached decoding, reloading."""

import keras
import numpy as np
import pytest
from surgery_helpers import decode_step_by_step

import tfprune

keras_hub = pytest.importorskip("keras_hub")

VOCAB, LENGTH = 50, 7


def _tokens(seed=0, length=LENGTH):
    return np.random.default_rng(seed).integers(1, VOCAB, (2, length)).astype("int32")


def _logits(model, inputs):
    return keras.ops.convert_to_numpy(model(inputs))


def _zero(variable, index, axis):
    """Zeroes entries `index` of `variable` along `axis`."""
    values = keras.ops.convert_to_numpy(variable).copy()
    values[(slice(None),) * axis + (index,)] = 0.0
    variable.assign(values)


# ---------------------------------------------------------------- Gemma 4


def _gemma4(window=4):
    # 4 query heads over 2 key/value heads; layer 0 attends within a sliding window, layer 1 globally.
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.Gemma4Backbone(
        vocabulary_size=VOCAB, image_size=16, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=16,
        intermediate_dim=32, head_dim=8, sliding_window_size=window, sliding_window_pattern=2,
    )  # fmt: skip
    model = keras_hub.models.Gemma4CausalLM(backbone=backbone, preprocessor=None)
    model.backbone.transformer_layers[1].layer_scalar.assign(0.75)  # the block's own weight must be carried
    return model


def _gemma4_inputs(tokens):
    positions = np.broadcast_to(np.arange(tokens.shape[1], dtype="int32"), tokens.shape)
    return {"token_ids": tokens, "padding_mask": np.ones_like(tokens), "position_ids": positions}


def _kill_gemma4(model, heads, units):
    """Dead query heads (zero query and output-projection weights) and MLP units in every block."""
    for block in model.backbone.transformer_layers:
        _zero(block.attention.query_dense.kernel, heads, 0)  # (heads, hidden, head width)
        _zero(block.attention.output_dense.kernel, heads, 0)  # (heads, head width, hidden)
        _zero(block.gating_ffw.kernel, units, 1)
        _zero(block.gating_ffw_2.kernel, units, 1)
        _zero(block.ffw_linear.kernel, units, 0)


def test_gemma4_dead_heads_and_units_are_removed_without_changing_the_logits_and_it_decodes_and_reloads(tmp_path):
    model = _gemma4()
    # Query head 1 reads key/value head 0, head 2 key/value head 1: one dead head in each group.
    _kill_gemma4(model, heads=[1, 2], units=np.arange(0, 32, 2))
    inputs = _gemma4_inputs(_tokens())  # 7 tokens: past the sliding window of 4
    pruned, result = tfprune.prune(model, "l1", rate=0.5, targets="all", round_to=1)
    widths = {group.name: (group.before, group.after) for group in result.groups}
    assert widths == {
        "decoder_block_0_attention_heads_0": (2, 1), "decoder_block_0_attention_heads_1": (2, 1),
        "decoder_block_1_attention_heads_0": (2, 1), "decoder_block_1_attention_heads_1": (2, 1),
        "decoder_block_0_ffw_gating": (32, 16), "decoder_block_1_ffw_gating": (32, 16),
    }  # fmt: skip
    attention = [layer for layer in pruned.layers if type(layer).__name__ == "Gemma4TextAttention"]
    assert [(layer.num_query_heads, layer.num_key_value_heads) for layer in attention] == [(2, 2)] * 2
    full = _logits(pruned, inputs)
    np.testing.assert_allclose(full, _logits(model, inputs), atol=1e-5)

    # The cache keeps the key/value heads; the sliding window is applied to layer 0's cache too.
    np.testing.assert_allclose(decode_step_by_step(pruned, inputs["token_ids"]), full, atol=1e-4)

    pruned.save(tmp_path / "pruned.keras")
    reloaded = keras.saving.load_model(tmp_path / "pruned.keras")
    np.testing.assert_allclose(_logits(reloaded, inputs), full, atol=1e-6)


def test_gemma4_whole_key_value_groups_are_removed_in_groups_mode():
    model = _gemma4()
    _kill_gemma4(model, heads=[2, 3], units=[])  # both query heads of key/value head 1
    inputs = _gemma4_inputs(_tokens(1))
    pruned, _ = tfprune.prune(model, "l1", rate=0.5, targets="heads", gqa="groups")
    attention = [layer for layer in pruned.layers if type(layer).__name__ == "Gemma4TextAttention"]
    assert [(layer.num_query_heads, layer.num_key_value_heads) for layer in attention] == [(2, 1)] * 2
    np.testing.assert_allclose(_logits(pruned, inputs), _logits(model, inputs), atol=1e-5)


def test_gemma4_hidden_width_shrinks_past_the_block_scalar_and_decodes(tmp_path):
    model = _gemma4()
    pruned, _ = tfprune.prune(model, "l1", rate=0.5, targets="hidden", round_to=1)
    assert tuple(pruned.get_layer("token_embedding").embeddings.shape) == (VOCAB, 8)  # the vocabulary stays
    inputs = _gemma4_inputs(_tokens(4))
    full = _logits(pruned, inputs)
    assert full.shape == (2, LENGTH, VOCAB)
    np.testing.assert_allclose(decode_step_by_step(pruned, inputs["token_ids"]), full, atol=1e-4)
    pruned.save(tmp_path / "pruned.keras")
    np.testing.assert_allclose(_logits(keras.saving.load_model(tmp_path / "pruned.keras"), inputs), full, atol=1e-6)


# ---------------------------------------------------------------- Gemma 3n


def _gemma3n():
    # One decoder block: 4 query heads over 2 key/value heads, AltUp over 2 inputs, Laurel of rank 1.
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.Gemma3nBackbone(
        text_vocab_size=VOCAB, text_hidden_size=16, num_hidden_layers=1, pad_token_id=0, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, intermediate_size=[32], hidden_activation="gelu_approximate",
        layer_types=["sliding_attention"], sliding_window=4, rope_theta=10000.0, max_position_embeddings=16,
        vocab_size_per_layer_input=VOCAB, hidden_size_per_layer_input=2, altup_num_inputs=2, laurel_rank=1,
    )  # fmt: skip
    return keras_hub.models.Gemma3nCausalLM(backbone=backbone, preprocessor=None)


def test_gemma3n_dead_heads_and_units_are_removed_without_changing_the_logits_and_it_reloads(tmp_path):
    model = _gemma3n()
    block = model.backbone.language_model.transformer_layers[0]
    attention, mlp = block.attention, block.mlp
    columns = np.concatenate([np.arange(8 * head, 8 * head + 8) for head in (1, 2)])  # one head of each group
    _zero(attention.q_proj.kernel, columns, 1)  # (hidden, heads * head width)
    _zero(attention.o_proj.kernel, columns, 0)
    dead = np.arange(0, 32, 2)
    _zero(mlp.gate_proj.kernel, dead, 1)
    _zero(mlp.up_proj.kernel, dead, 1)
    _zero(mlp.down_proj.kernel, dead, 0)
    tokens = _tokens(2)
    inputs = {"token_ids": tokens, "padding_mask": np.ones_like(tokens, dtype=bool)}
    # AltUp's modality router (a Dense over the altup inputs, then tanh, then Dense layers) is a group too: left alone.
    pruned, result = tfprune.prune(model, "l1", rate=0.5, targets="all", round_to=1, ignore=("modality_router",))
    (layer,) = [layer for layer in pruned.layers if type(layer).__name__ == "Gemma3nTextAttention"]
    assert (layer.num_attention_heads, layer.num_key_value_heads) == (2, 2)
    widths = {group.name.split("decoder_block_0_")[-1]: (group.before, group.after) for group in result.groups}
    assert widths == {"attention_heads_0": (2, 1), "attention_heads_1": (2, 1), "mlp_gate_proj": (32, 16),
                      "laurel_linear_left": (1, 1)}  # fmt: skip
    full = _logits(pruned, inputs)
    np.testing.assert_allclose(full, _logits(model, inputs), atol=1e-5)
    pruned.save(tmp_path / "pruned.keras")
    np.testing.assert_allclose(_logits(keras.saving.load_model(tmp_path / "pruned.keras"), inputs), full, atol=1e-6)


def test_docstring_examples():
    import doctest

    from tfprune import handlers_gemma

    results = doctest.testmod(handlers_gemma, extraglobs={"tfprune": tfprune, "keras": keras})
    assert results.attempted and not results.failed


def test_a_reshape_to_sizes_read_when_run_passes_channels_only_when_the_last_axis_keeps_its_width(tmp_path):
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    embedded = keras.layers.Embedding(VOCAB, 6, name="embedding")(tokens)
    split = tfprune.handlers_gemma.ReshapeToSizes(sizes=[[0, 0], [0, 1], 2, 3])(embedded, tokens)
    kept = tfprune.handlers_gemma.ReshapeToSizes(sizes=[[0, 0], [0, 1], 6])(embedded, tokens)
    outputs = keras.layers.Dense(4, name="head")(keras.layers.Dense(5, name="hidden")(kept))
    model = keras.Model(tokens, [split, outputs])
    graph = tfprune.graph.build(model)
    assert graph["hidden"].prunable
    assert not graph["embedding"].prunable  # its channels are split into (2, 3) by the first reshape
    values = _tokens(length=4)
    table = keras.ops.convert_to_numpy(model.get_layer("embedding").embeddings)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(values)[0]), table[values].reshape(2, 4, 2, 3))
    model.save(tmp_path / "reshape.keras")
    reloaded = keras.saving.load_model(tmp_path / "reshape.keras")
    assert tuple(reloaded(_tokens(length=5))[0].shape) == (2, 5, 2, 3)


def test_a_nested_model_with_list_inputs_given_a_dict_is_inlined_by_input_name():
    # The list's order (token, mask) is not the dict's key order (mask, token).
    token, mask = keras.Input((3,), name="token"), keras.Input((3,), name="mask")
    inner = keras.Model([token, mask], keras.layers.Dense(2, name="dense")(token - 2.0 * mask), name="inner")
    outer_inputs = {"token": keras.Input((3,), name="token"), "mask": keras.Input((3,), name="mask")}
    model = keras.Model(outer_inputs, inner(outer_inputs))
    values = {"token": np.ones((1, 3), "float32"), "mask": np.full((1, 3), 5.0, "float32")}
    flat = tfprune.graph.flatten(model)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(flat(values)), keras.ops.convert_to_numpy(model(values)))


def test_gemma3n_pruned_causal_lm_decodes_with_a_cache():
    model = _gemma3n()
    pruned, _ = tfprune.prune(model, "l1", rate=0.5, targets="heads")
    tokens = _tokens(3)
    full = _logits(pruned, {"token_ids": tokens, "padding_mask": np.ones_like(tokens, dtype=bool)})
    _, cache = tfprune.decoding.build_cache(pruned, tokens, max_length=LENGTH)
    assert {tuple(value.shape) for value in cache.values()} == {(2, 2, 2, LENGTH, 8)}  # key/value heads kept
    # 7 tokens: past the sliding window of 4, which the attention layer applies to its cache itself.
    np.testing.assert_allclose(decode_step_by_step(pruned, tokens), full, atol=1e-4)
