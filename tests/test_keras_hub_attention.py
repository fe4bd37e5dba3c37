"""Attention heads inside keras-hub blocks tfprune keeps whole (T5), and decoders it now inlines (PARSeq).

Each test removes heads (or units) whose weights are all zero, checks the
outputs are unchanged, and reloads the smaller model from `.keras`.
"""

import keras
import numpy as np
import pytest
from surgery_helpers import all_outputs as _all_outputs
from surgery_helpers import assert_dead_channels_leave_no_trace

import tfprune


def _assert_dead_channels_leave_no_trace(model, group, channels, x, tmp_path):
    # Heads: their query/key/value units and their rows of the output projection are zeroed.
    return assert_dead_channels_leave_no_trace(model, group, channels, x, tmp_path, roles=("output", "param", "input"))


def _seq2seq_inputs(seed=0, vocabulary=30):
    rng = np.random.default_rng(seed)
    return {"encoder_token_ids": rng.integers(1, vocabulary, (2, 6)).astype("int32"),
            "encoder_padding_mask": np.ones((2, 6), "int32"),
            "decoder_token_ids": rng.integers(1, vocabulary, (2, 5)).astype("int32"),
            "decoder_padding_mask": np.ones((2, 5), "int32")}  # fmt: skip


def _t5(keras_hub):
    keras.utils.set_random_seed(0)
    return keras_hub.models.T5Backbone(vocabulary_size=30, num_layers=2, num_heads=4, hidden_dim=16,
                                       intermediate_dim=32, key_value_dim=4)  # fmt: skip


def _paths(group):
    return {path.split("/", 1)[1] for member in group.members for path, _ in member.weights}


@pytest.mark.slow  # T5 traces and rebuilds slowly (over a minute); test_handlers_ops's T5 test covers heads in CI
def test_t5_blocks_prune_heads_chained_through_the_position_bias(tmp_path):
    # Every block of a T5 stack adds the first block's position bias (one row per head)
    # to its scores: the heads of a stack are one group, with the bias table's columns;
    # a decoder block's cross-attention shares its block's head count, so its heads too.
    keras_hub = pytest.importorskip("keras_hub")
    flat = tfprune.graph.flatten(_t5(keras_hub))
    graph = tfprune.graph.build(flat)
    heads = {group.name: group for group in graph if group.name.endswith("_heads")}
    assert sorted(heads) == ["transformer_decoder_layer_0_heads", "transformer_encoder_layer_0_heads"]
    encoder = heads["transformer_encoder_layer_0_heads"]
    assert encoder.prunable and encoder.size == 4 and encoder.heads_of == "transformer_encoder_layer_0/self_attention"
    assert {member.layer_name for member in encoder.members} == {"transformer_encoder_layer_0",
                                                                 "transformer_encoder_layer_1"}  # fmt: skip
    assert "embeddings" in _paths(encoder)  # the relative position bias table (32 buckets, heads)
    decoder = heads["transformer_decoder_layer_0_heads"]
    assert {"self_attention/query_projector/kernel", "cross_attention/output_projector/kernel"} <= _paths(decoder)
    x = _seq2seq_inputs()
    # Not vacuous: removing heads that still compute something changes the outputs.
    live = tfprune.surgery.remove_channels(flat, {encoder.name: [1, 3]})
    assert max(np.abs(a - b).max() for a, b in zip(_all_outputs(live, x), _all_outputs(flat, x))) > 1e-4
    small = _assert_dead_channels_leave_no_trace(flat, encoder.name, [1, 3], x, tmp_path)
    assert small.get_layer("transformer_encoder_layer_1").self_attention.num_heads == 2
    assert small.get_layer("transformer_decoder_layer_1").self_attention.num_heads == 4
    small = _assert_dead_channels_leave_no_trace(flat, decoder.name, [0], x, tmp_path)
    assert small.get_layer("transformer_decoder_layer_1").cross_attention.num_heads == 3


@pytest.mark.slow  # the whole prune with its checks: the test above covers the handler
def test_t5_backbone_prune_removes_heads_and_reloads(tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    model = _t5(keras_hub)
    pruned, result = tfprune.prune(model, "l1", rate=0.3, targets="heads")  # heads: never rounded to round_to
    assert result.widths_after == {"transformer_encoder_layer_0_heads": 3, "transformer_decoder_layer_0_heads": 3}
    x = _seq2seq_inputs()
    pruned.save(tmp_path / "t5.keras")
    for got, want in zip(_all_outputs(keras.models.load_model(tmp_path / "t5.keras"), x), _all_outputs(pruned, x)):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


def test_t5gemma_decoder_blocks_prune_their_mlp_units(tmp_path):
    # T5Gemma's decoder blocks stay whole; their handler declares the gated MLP's units.
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    side = dict(hidden_dim=16, intermediate_dim=32, num_layers=1, num_attention_heads=2, num_key_value_heads=1,
                head_dim=8, layer_types=["full_attention"])  # fmt: skip
    kwargs = {f"{part}_{key}": value for part in ("encoder", "decoder") for key, value in side.items()}
    model = keras_hub.models.T5GemmaBackbone(vocabulary_size=30, cross_attention_hidden_size=16, **kwargs)
    flat = tfprune.graph.flatten(model)
    graph = tfprune.graph.build(flat)
    units = graph["decoder_layer_0_gate_proj"]
    assert units.prunable and units.size == 32
    assert {"mlp/gate_proj/kernel", "mlp/up_proj/kernel", "mlp/down_proj/kernel"} <= _paths(units)
    small = _assert_dead_channels_leave_no_trace(flat, units.name, [2, 7, 31], _seq2seq_inputs(), tmp_path)
    assert small.get_layer("decoder_layer_0").mlp.down_proj.kernel.shape == (29, 16)


def test_parseq_decoder_is_inlined_and_its_attention_heads_prune(tmp_path):
    # PARSeq's decoder holds its position queries itself and repeats them over the batch
    # with `ops.ones((batch, 1, 1))`: inlined, its blocks' attention layers are seen.
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    encoder = keras_hub.models.ViTBackbone(image_shape=(16, 32, 3), patch_size=(4, 8), num_layers=1, num_heads=2,
                                           hidden_dim=16, mlp_dim=32, use_class_token=False, name="image_encoder")  # fmt: skip
    model = keras_hub.models.PARSeqBackbone(image_encoder=encoder, vocabulary_size=97, max_label_length=7,
                                            decoder_hidden_dim=16, num_decoder_layers=1, num_decoder_heads=4,
                                            decoder_mlp_dim=32, dropout_rate=0.0, attention_dropout=0.0)  # fmt: skip
    flat = tfprune.graph.flatten(model)
    assert "decoder" not in [layer.name for layer in flat.layers]
    rng = np.random.default_rng(0)
    x = {"images": rng.uniform(size=(2, 16, 32, 3)).astype("float32"),
         "token_ids": rng.integers(1, 97, (2, 8)).astype("int32"), "padding_mask": np.ones((2, 8), "int32")}  # fmt: skip
    small = _assert_dead_channels_leave_no_trace(flat, "decoder_layer_0_cross_attention_heads", [0, 2], x, tmp_path)
    assert small.get_layer("decoder_layer_0_cross_attention").num_heads == 2


def test_ones_over_the_traced_batch_size_is_inlined():
    # `ops.ones((batch, 1, 1))` in a composite layer is recorded as a broadcast read when the
    # model runs, so the layer is inlined and holds for any batch.
    class RepeatOverBatch(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(4, name="dense")

        def call(self, x):
            batch = keras.ops.shape(x)[0]
            return self.dense(x) + keras.ops.ones((batch, 1, 1)) * 2.0

    RepeatOverBatch.__module__ = "my_project.layers"
    inputs = keras.Input((3, 5))
    model = keras.Model(inputs, RepeatOverBatch(name="block")(inputs))
    flat = tfprune.graph.flatten(model)
    assert "block" not in [layer.name for layer in flat.layers]
    for batch in (1, 3):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 5)).astype("float32")
        np.testing.assert_allclose(_all_outputs(flat, x)[0], _all_outputs(model, x)[0], atol=1e-6)


def _moonshine(keras_hub):
    keras.utils.set_random_seed(0)
    return keras_hub.models.MoonshineBackbone(vocabulary_size=30, filter_dim=16, encoder_num_layers=1,
                                              decoder_num_layers=1, hidden_dim=16, intermediate_dim=32,
                                              encoder_num_heads=4, decoder_num_heads=4)  # fmt: skip


def _moonshine_inputs():
    rng = np.random.default_rng(0)
    return {"encoder_input_values": rng.uniform(size=(2, 1600, 1)).astype("float32"),
            "encoder_padding_mask": np.ones((2, 1600), bool),
            "decoder_token_ids": rng.integers(1, 30, (2, 5)).astype("int32"),
            "decoder_padding_mask": np.ones((2, 5), bool)}  # fmt: skip


def test_moonshine_blocks_inline_and_their_heads_and_mlp_units_prune(tmp_path):
    # Moonshine's attention layers take a rotary embedding, which Keras's MultiHeadAttention
    # output spec refuses: copied as tfprune's recordable subclass, the blocks around them inline.
    keras_hub = pytest.importorskip("keras_hub")
    from tfprune import handlers_keras_hub

    flat = tfprune.graph.flatten(_moonshine(keras_hub))
    names = [layer.name for layer in flat.layers]
    assert "encoder_block_0" not in names and "decoder_block_0" not in names
    recordable = handlers_keras_hub.recordable_moonshine_attention()
    attention = flat.get_layer("encoder_block_0_self_attention_layer")
    assert type(attention) is recordable
    x = _moonshine_inputs()
    small = _assert_dead_channels_leave_no_trace(flat, "encoder_block_0_self_attention_layer_heads", [1, 2], x,
                                                 tmp_path)  # fmt: skip
    assert small.get_layer("encoder_block_0_self_attention_layer").num_heads == 2
    # The decoder's gated MLP (SwiGLU: its first Dense makes both halves).
    mlp = next(group.name for group in tfprune.graph.build(flat) if group.name.endswith("mlp_dense_1"))
    _assert_dead_channels_leave_no_trace(flat, mlp, [0, 40], x, tmp_path)
    # A `.keras` file names the class `tfprune>MoonshineMultiHeadAttention`: the stand-in
    # registered at import makes the class (a process that has not made it yet).
    config = attention.get_config()
    assert config["apply_rotary_embedding"] is True and config["attention_bias"] is False
    rebuilt = handlers_keras_hub._DeferredMoonshineAttention.from_config(config)
    assert type(rebuilt) is recordable and rebuilt.num_heads == 4
