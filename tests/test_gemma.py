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
