"""Decoder language models: keras-hub Llama and Gemma causal LMs, grouped-query attention, cached decoding."""

import keras
import numpy as np
import pytest
from surgery_helpers import decode_step_by_step

import tfprune

keras_hub = pytest.importorskip("keras_hub")

VOCAB, LENGTH = 50, 7
# Grouped-query: 4 query heads over 2 key/value heads, head width 8.
_CONFIG = dict(vocabulary_size=VOCAB, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=32,
               intermediate_dim=64)  # fmt: skip


def _causal_lm(family):
    keras.utils.set_random_seed(0)
    if family == "llama":
        backbone = keras_hub.models.LlamaBackbone(**_CONFIG)
        return keras_hub.models.LlamaCausalLM(backbone=backbone, preprocessor=None)
    backbone = keras_hub.models.GemmaBackbone(**_CONFIG, head_dim=8)
    return keras_hub.models.GemmaCausalLM(backbone=backbone, preprocessor=None)


def _tokens(seed=0):
    return np.random.default_rng(seed).integers(1, VOCAB, (2, LENGTH)).astype("int32")


def _inputs(tokens):
    return {"token_ids": tokens, "padding_mask": np.ones_like(tokens)}


def _logits(model, tokens):
    return keras.ops.convert_to_numpy(model(_inputs(tokens)))


def _attention(model, block):
    backbone = model.backbone
    if isinstance(backbone, keras_hub.models.LlamaBackbone):
        layer = backbone.transformer_layers[block]._self_attention_layer
        return layer, layer._query_dense, layer._output_dense
    layer = backbone.transformer_layers[block].attention
    return layer, layer.query_dense, layer.output_dense


def _kill_query_heads(model, heads):
    """Zeroes the query and output-projection weights of query heads `heads` in every block: dead heads."""
    for block in range(_CONFIG["num_layers"]):
        layer, query, output = _attention(model, block)
        kernel = keras.ops.convert_to_numpy(query.kernel).copy()
        head_axis = 1 if isinstance(model.backbone, keras_hub.models.LlamaBackbone) else 0
        index = [slice(None)] * kernel.ndim
        index[head_axis] = heads
        kernel[tuple(index)] = 0.0
        query.kernel.assign(kernel)
        rows = keras.ops.convert_to_numpy(output.kernel).copy()
        rows[heads] = 0.0
        output.kernel.assign(rows)


def _pruned_attention(pruned):
    return [layer for layer in pruned.layers if hasattr(layer, "num_key_value_heads")]


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_dead_query_heads_are_removed_from_each_key_value_group_without_changing_the_logits(family):
    model = _causal_lm(family)
    # Query head 1 reads key/value head 0, query head 2 key/value head 1: one dead head in each group.
    _kill_query_heads(model, [1, 2])
    tokens = _tokens()
    pruned, result = tfprune.prune(model, "l1", rate=0.5, targets="heads")
    assert [(layer.num_query_heads, layer.num_key_value_heads) for layer in _pruned_attention(pruned)] == [(2, 2)] * 2
    assert {(group.before, group.after) for group in result.groups} == {(2, 1)}
    np.testing.assert_allclose(_logits(pruned, tokens), _logits(model, tokens), atol=1e-5)


def test_a_dead_key_value_group_is_removed_with_its_query_heads():
    model = _causal_lm("llama")
    _kill_query_heads(model, [2, 3])  # both query heads of key/value head 1
    tokens = _tokens()
    pruned, result = tfprune.prune(model, "l1", rate=0.5, targets="heads", gqa="groups")
    assert [(layer.num_query_heads, layer.num_key_value_heads) for layer in _pruned_attention(pruned)] == [(2, 1)] * 2
    assert [group.name for group in result.groups] == [f"transformer_layer_{i}_self_attention_heads" for i in (0, 1)]
    np.testing.assert_allclose(_logits(pruned, tokens), _logits(model, tokens), atol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_dead_gated_mlp_units_are_removed_from_gate_up_and_down_together(family):
    model = _causal_lm(family)
    dead = np.arange(0, 64, 2) if family == "llama" else np.arange(0, 32, 2)
    for block in model.backbone.transformer_layers:
        if family == "llama":
            gate, up, down = (block._feedforward_gate_dense, block._feedforward_intermediate_dense,
                              block._feedforward_output_dense)  # fmt: skip
        else:
            gate, up, down = block.gating_ffw, block.gating_ffw_2, block.ffw_linear
        for dense in (gate, up):
            kernel = keras.ops.convert_to_numpy(dense.kernel).copy()
            kernel[:, dead] = 0.0
            dense.kernel.assign(kernel)
        rows = keras.ops.convert_to_numpy(down.kernel).copy()
        rows[dead] = 0.0
        down.kernel.assign(rows)
    tokens = _tokens()
    pruned, result = tfprune.prune(model, "l1", rate=0.5, targets="mlp", round_to=1)
    assert {(group.before, group.after) for group in result.groups} == {(len(dead) * 2, len(dead))}
    np.testing.assert_allclose(_logits(pruned, tokens), _logits(model, tokens), atol=1e-5)


def test_query_head_groups_of_one_layer_keep_one_width():
    model = _causal_lm("llama")
    # Only key/value group 0 has a weak query head: a threshold takes it alone, and
    # balancing keeps it (no group may lose more than the others).
    _kill_query_heads(model, [1])
    pruned, result = tfprune.prune(model, "l1", threshold=1e-9, targets="heads")
    widths = {group.name: group.after for group in result.groups}
    assert widths == {f"transformer_layer_{i}_self_attention_heads_{k}": 2 for i in (0, 1) for k in (0, 1)}
    assert result.unchanged or result.params_after == result.params_before
    assert all(layer.num_query_heads % layer.num_key_value_heads == 0 for layer in _pruned_attention(pruned))


def test_gqa_must_be_a_known_mode():
    model = _causal_lm("llama")
    with pytest.raises(ValueError, match="`gqa` must be one of"):
        tfprune.prune(model, "l1", rate=0.5, targets="heads", gqa="keys")


@pytest.mark.parametrize("family", ["llama", "gemma"])
def test_pruned_causal_lm_decodes_with_a_cache_and_reloads(family, tmp_path):
    model = _causal_lm(family)
    tokens = _tokens(1)
    pruned, result = tfprune.prune(model, "l1", rate=0.5, targets="all", round_to=1)
    # Half the heads and half the MLP units.
    assert [(layer.num_query_heads, layer.num_key_value_heads) for layer in _pruned_attention(pruned)] == [(2, 2)] * 2
    mlp = {group.before: group.after for group in result.groups if group.before > 2}
    assert mlp == ({64: 32} if family == "llama" else {32: 16})
    assert result.params_after < result.params_before
    full = _logits(pruned, tokens)
    assert full.shape == (2, LENGTH, VOCAB)  # the vocabulary never shrinks
    _, cache = tfprune.decoding.build_cache(pruned, tokens, max_length=LENGTH)
    assert {tuple(value.shape) for value in cache.values()} == {(2, 2, LENGTH, 2, 8)}
    np.testing.assert_allclose(decode_step_by_step(pruned, tokens), full, atol=1e-4)

    path = tmp_path / "pruned.keras"
    pruned.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(_logits(reloaded, tokens), full, atol=1e-6)
    logits, _ = tfprune.decoding.build_cache(reloaded, tokens, max_length=LENGTH)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(logits), full, atol=1e-4)


def test_pruned_gpt2_decodes_with_a_cache_and_learned_positions():
    # GPT-2: multi-head attention (keras-hub's CachedMultiHeadAttention) and a position
    # embedding, which must start at the cache index.
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=VOCAB, num_layers=2, num_heads=4, hidden_dim=16,
                                             intermediate_dim=32, max_sequence_length=LENGTH)  # fmt: skip
    model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    tokens = _tokens(2)
    pruned, _ = tfprune.prune(model, "l1", rate=0.5, targets="all", round_to=1)
    assert [layer.num_heads for layer in tfprune.decoding.attention_layers(pruned)] == [2, 2]
    np.testing.assert_allclose(decode_step_by_step(pruned, tokens), _logits(pruned, tokens), atol=1e-4)


def test_hidden_width_shrinks_through_rms_norms_and_the_embedding_but_not_the_vocabulary():
    model = _causal_lm("gemma")  # Gemma ties its output projection to the token embedding
    pruned, _ = tfprune.prune(model, "l1", rate=0.5, targets="hidden", round_to=1)
    embedding = pruned.get_layer("token_embedding")
    assert tuple(embedding.embeddings.shape) == (VOCAB, 16)
    assert _logits(pruned, _tokens()).shape == (2, LENGTH, VOCAB)


def test_keras_group_query_attention_loses_dead_query_heads():
    keras.utils.set_random_seed(0)
    tokens = keras.Input((6, 8), name="tokens")
    x = keras.layers.Dense(16, name="embed")(tokens)
    attended = keras.layers.GroupQueryAttention(head_dim=4, num_query_heads=4, num_key_value_heads=2, name="gqa")(x, x)
    model = keras.Model(tokens, keras.layers.Dense(3, name="head")(attended))
    layer = model.get_layer("gqa")
    query = keras.ops.convert_to_numpy(layer._query_dense.kernel).copy()  # (width, heads, dim)
    query[:, [0, 3]] = 0.0
    layer._query_dense.kernel.assign(query)
    output = keras.ops.convert_to_numpy(layer._output_dense.kernel).copy()  # (heads, dim, width)
    output[[0, 3]] = 0.0
    layer._output_dense.kernel.assign(output)
    sample = np.random.default_rng(0).uniform(size=(2, 6, 8)).astype("float32")
    pruned, _ = tfprune.prune(model, "l1", rate=0.5, targets="heads")
    assert (pruned.get_layer("gqa").num_query_heads, pruned.get_layer("gqa").num_key_value_heads) == (2, 2)
    np.testing.assert_allclose(pruned(sample), model(sample), atol=1e-5)


def test_a_decoder_block_traces_for_any_sequence_length():
    flat = tfprune.graph.flatten(_causal_lm("llama"))
    assert not any(type(layer).__name__ == "LlamaTransformerDecoder" for layer in flat.layers)
    names = {type(operation).__name__ for operation in flat.operations}
    assert {"SizeRange", "BroadcastToSizes"} <= names
    for length in (1, 4, 9):
        assert flat(_inputs(_tokens()[:, :1].repeat(length, axis=1))).shape == (2, length, VOCAB)


def test_docstring_examples():
    import doctest

    from tfprune import handlers_decoders

    results = doctest.testmod(handlers_decoders, extraglobs={"tfprune": tfprune, "keras": keras})
    assert results.attempted and not results.failed


class _CausalMix(keras.layers.Layer):
    """A composite layer that averages each position with the ones before it: a causal mask from the length."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4, name="dense")

    def call(self, x):
        length = keras.ops.shape(x)[1]
        rows, columns = keras.ops.arange(length)[:, None], keras.ops.arange(length)[None, :]
        mask = keras.ops.broadcast_to(keras.ops.expand_dims(rows >= columns, 0), (keras.ops.shape(x)[0], length, length))
        return self.dense(keras.ops.matmul(keras.ops.cast(mask, x.dtype), x))


_CausalMix.__module__ = "my_project.layers"  # a user's composite layer, not Keras's


def test_a_causal_mask_from_the_sequence_length_is_recorded_for_any_length(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, 3))
    model = keras.Model(inputs, _CausalMix(name="mix")(keras.layers.Dense(6, name="embed")(inputs)))
    flat = tfprune.graph.flatten(model)
    assert {"SizeRange", "BroadcastToSizes"} <= {type(operation).__name__ for operation in flat.operations}
    flat.save(tmp_path / "flat.keras")
    reloaded = keras.saving.load_model(tmp_path / "flat.keras")
    for length in (1, 4, 9):
        sample = np.random.default_rng(length).uniform(size=(2, length, 3)).astype("float32")
        np.testing.assert_allclose(flat(sample), model(sample), atol=1e-6)
        np.testing.assert_allclose(reloaded(sample), model(sample), atol=1e-6)
    assert tfprune.graph.build(flat)["embed"].prunable  # the mask does not pin the channels it is applied to


# ---------------------------------------------------------------- mixture of experts

_MOE = dict(vocabulary_size=VOCAB, num_layers=1, num_query_heads=4, num_key_value_heads=2, hidden_dim=16)


def _moe_causal_lm(family):
    keras.utils.set_random_seed(0)
    if family == "mixtral":
        backbone = keras_hub.models.MixtralBackbone(**_MOE, intermediate_dim=16, num_experts=4, top_k=2,
                                                    sliding_window=LENGTH)  # fmt: skip
        return keras_hub.models.MixtralCausalLM(backbone=backbone, preprocessor=None)
    if family == "qwen_moe":
        backbone = keras_hub.models.QwenMoeBackbone(**_MOE, intermediate_dim=16, moe_intermediate_dim=16,
                                                    shared_expert_intermediate_dim=8, num_experts=4, top_k=2)  # fmt: skip
        return keras_hub.models.QwenMoeCausalLM(backbone=backbone, preprocessor=None)
    if family == "qwen3_moe":
        backbone = keras_hub.models.Qwen3MoeBackbone(**_MOE, intermediate_dim=16, moe_intermediate_dim=16,
                                                     num_experts=4, top_k=2, head_dim=4)  # fmt: skip
        return keras_hub.models.Qwen3MoeCausalLM(backbone=backbone, preprocessor=None)
    backbone = keras_hub.models.GptOssBackbone(**_MOE, intermediate_dim=16, num_experts=4, top_k=2, head_dim=4,
                                               sliding_window=LENGTH)  # fmt: skip
    return keras_hub.models.GptOssCausalLM(backbone=backbone, preprocessor=None)


def _kill_expert_units(block, dead, family):
    """Zeroes units `dead` of every expert of a MoE block (their gate, up and down weights): dead units."""
    bank = block.experts if family == "gpt_oss" else block.expert_bank
    units = 16
    if family == "mixtral":
        fan_in = [(bank._expert_feedforward_gate_dense, dead), (bank._expert_feedforward_intermediate_dense, dead)]
        down = bank._expert_feedforward_output_dense
    elif family == "qwen_moe":  # gate and up fused as halves
        fan_in = [(bank._expert_feedforward_gate_dense, np.concatenate([dead, dead + units]))]
        down = bank._expert_feedforward_output_dense
    else:  # gate and up interleaved
        fan_in = [(bank.gate_up_proj, np.concatenate([2 * dead, 2 * dead + 1])),
                  (bank.gate_up_proj_bias, np.concatenate([2 * dead, 2 * dead + 1]))]  # fmt: skip
        down = bank.down_proj
    for weight, columns in fan_in:
        value = keras.ops.convert_to_numpy(weight).copy()
        value[..., columns] = 0.0
        weight.assign(value)
    value = keras.ops.convert_to_numpy(down).copy()
    value[:, dead] = 0.0
    down.assign(value)


def _moe_blocks(model, family):
    layers = model.backbone.transformer_layers
    if family == "mixtral":
        return [layer._sparse_moe_block for layer in layers]
    if family == "qwen_moe":
        return [layer.mlp for layer in layers]
    return [layer.sparse_moe_block for layer in layers]


@pytest.mark.parametrize("family", ["mixtral", "qwen_moe", "gpt_oss"])
def test_dead_expert_units_are_removed_from_every_expert_without_changing_the_logits(family, tmp_path):
    model = _moe_causal_lm(family)
    dead = np.arange(1, 16, 2)  # half the units of every expert
    for block in _moe_blocks(model, family):
        _kill_expert_units(block, dead, family)
    tokens = _tokens(3)
    # targets="mlp" selects the experts' units (and Qwen-MoE's shared expert, whose units are alive).
    targets = "mlp" if family != "qwen_moe" else (lambda group: group.name.endswith("_experts"))
    pruned, result = tfprune.prune(model, "l1", rate=0.5, round_to=1, targets=targets)
    assert {(group.before, group.after) for group in result.groups} == {(16, 8)}
    blocks = [layer for layer in pruned.layers if "moe_block" in layer.name or layer.name.endswith("_mlp")]
    assert blocks and all(_expert_width(block) == 8 for block in blocks)
    full = _logits(pruned, tokens)
    np.testing.assert_allclose(full, _logits(model, tokens), atol=1e-5)
    pruned.save(tmp_path / "pruned.keras")
    reloaded = keras.saving.load_model(tmp_path / "pruned.keras")
    np.testing.assert_allclose(_logits(reloaded, tokens), full, atol=1e-6)


def _expert_width(block):
    bank = getattr(block, "expert_bank", None) or block.experts
    return bank.intermediate_dim


def test_pruned_mixtral_decodes_with_a_cache():
    model = _moe_causal_lm("mixtral")
    tokens = _tokens(4)
    pruned, result = tfprune.prune(model, "l1", rate=0.5, round_to=1)
    assert {group.name: group.after for group in result.groups}["transformer_layer_0_mixtral_sparse_moe_block_experts"] == 8
    np.testing.assert_allclose(decode_step_by_step(pruned, tokens), _logits(pruned, tokens), atol=1e-4)


def test_gpt_neo_x_fused_query_key_value_loses_dead_heads_and_reloads(tmp_path):
    # GPT-NeoX: one fused projection, (hidden, heads, 3 * head width), and an output
    # projection reading the heads flattened, (heads * head width, hidden).
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.GPTNeoXBackbone(vocabulary_size=VOCAB, num_layers=1, num_heads=4, hidden_dim=16,
                                                intermediate_dim=32, max_sequence_length=LENGTH,
                                                rotary_percentage=0.5)  # fmt: skip
    model = keras_hub.models.GPTNeoXCausalLM(backbone=backbone, preprocessor=None)
    attention = backbone.transformer_layers[0]._self_attention_layer
    fused = keras.ops.convert_to_numpy(attention._qkv_dense.kernel).copy()
    fused[:, [0, 2]] = 0.0
    attention._qkv_dense.kernel.assign(fused)
    output = keras.ops.convert_to_numpy(attention._output_dense.kernel).copy()
    output[np.r_[0:4, 8:12]] = 0.0  # the rows of heads 0 and 2 (head width 4)
    attention._output_dense.kernel.assign(output)
    tokens = _tokens(5)
    pruned, result = tfprune.prune(model, "l1", rate=0.5, targets="heads")
    assert [(group.before, group.after) for group in result.groups] == [(4, 2)]
    (layer,) = [layer for layer in pruned.layers if type(layer).__name__ == "GPTNeoXAttention"]
    assert (layer.num_heads, layer.attn_head_size, tuple(layer._output_dense.kernel.shape)) == (2, 4, (8, 16))
    full = _logits(pruned, tokens)
    np.testing.assert_allclose(full, _logits(model, tokens), atol=1e-5)
    pruned.save(tmp_path / "pruned.keras")
    np.testing.assert_allclose(_logits(keras.saving.load_model(tmp_path / "pruned.keras"), tokens), full, atol=1e-6)


def test_smollm3_flat_query_heads_lose_dead_heads_in_each_group_and_reload(tmp_path):
    # SmolLM3: Dense query/key/value projections with the heads flattened, (hidden, heads * width).
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.SmolLM3Backbone(
        vocabulary_size=VOCAB, hidden_dim=16, intermediate_dim=32, num_layers=1, num_attention_heads=4,
        num_key_value_heads=2, attention_bias=False, attention_dropout=0.0, rope_layer_enabled_list=[True],
        layer_types=["attention"], mlp_bias=False, layer_norm_epsilon=1e-5, max_position_embeddings=LENGTH,
        rope_theta=10000.0, partial_rotary_factor=1.0,
    )  # fmt: skip
    model = keras_hub.models.SmolLM3CausalLM(backbone=backbone, preprocessor=None)
    attention = backbone.transformer_layers[0].self_attn
    query = keras.ops.convert_to_numpy(attention.q_proj.kernel).copy()
    query[:, 4:12] = 0.0  # heads 1 and 2 (width 4): one of each key/value group
    attention.q_proj.kernel.assign(query)
    output = keras.ops.convert_to_numpy(attention.o_proj.kernel).copy()
    output[[1, 2]] = 0.0
    attention.o_proj.kernel.assign(output)
    tokens = _tokens(6)
    pruned, result = tfprune.prune(model, "l1", rate=0.5, targets="heads")
    assert sorted((group.before, group.after) for group in result.groups) == [(2, 1), (2, 1)]
    (layer,) = [layer for layer in pruned.layers if type(layer).__name__ == "SmolLM3Attention"]
    assert (layer.num_attention_heads, layer.num_key_value_heads, layer.head_dim) == (2, 2, 4)
    full = _logits(pruned, tokens)
    np.testing.assert_allclose(full, _logits(model, tokens), atol=1e-5)
    pruned.save(tmp_path / "pruned.keras")
    np.testing.assert_allclose(_logits(keras.saving.load_model(tmp_path / "pruned.keras"), tokens), full, atol=1e-6)


def test_mixtral_hidden_width_shrinks_through_its_experts_but_not_the_vocabulary(tmp_path):
    model = _moe_causal_lm("mixtral")
    pruned, _ = tfprune.prune(model, "l1", rate=0.5, targets="hidden", round_to=1)
    assert tuple(pruned.get_layer("token_embedding").embeddings.shape) == (VOCAB, 8)
    (block,) = [layer for layer in pruned.layers if "moe_block" in layer.name]
    down = block.expert_bank._expert_feedforward_output_dense
    assert (block.hidden_dim, tuple(down.shape)) == (8, (4, 16, 8))
    logits = _logits(pruned, _tokens())
    assert logits.shape == (2, LENGTH, VOCAB) and np.isfinite(logits).all()
    pruned.save(tmp_path / "pruned.keras")
    np.testing.assert_allclose(_logits(keras.saving.load_model(tmp_path / "pruned.keras"), _tokens()), logits, atol=1e-6)


def test_gpt_oss_loses_dead_heads_with_their_attention_sinks_and_decodes_with_a_cache(tmp_path):
    model = _moe_causal_lm("gpt_oss")  # 4 query heads over 2 key/value heads, each with a learned sink
    attention = model.backbone.transformer_layers[0].self_attention_layer
    query = keras.ops.convert_to_numpy(attention.query_dense.kernel).copy()  # (hidden, heads, width)
    query[:, [1, 2]] = 0.0
    attention.query_dense.kernel.assign(query)
    output = keras.ops.convert_to_numpy(attention.output_dense.kernel).copy()  # (heads, width, hidden)
    output[[1, 2]] = 0.0
    attention.output_dense.kernel.assign(output)
    sinks = np.array([0.5, -1.0, 2.0, 0.25], "float32")  # the kept heads' sinks must stay theirs
    attention.sinks.assign(sinks)
    tokens = _tokens(7)
    pruned, result = tfprune.prune(model, "l1", rate=0.5, targets="heads")
    (layer,) = [layer for layer in pruned.layers if type(layer).__name__ == "GptOssAttention"]
    assert (layer.num_query_heads, layer.num_key_value_heads) == (2, 2)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.sinks), sinks[[0, 3]])
    full = _logits(pruned, tokens)
    np.testing.assert_allclose(full, _logits(model, tokens), atol=1e-5)
    np.testing.assert_allclose(decode_step_by_step(pruned, tokens), full, atol=1e-4)
    pruned.save(tmp_path / "pruned.keras")
    np.testing.assert_allclose(_logits(keras.saving.load_model(tmp_path / "pruned.keras"), tokens), full, atol=1e-6)


def test_qwen3_moe_loses_dead_query_heads_and_decodes_with_a_cache():
    model = _moe_causal_lm("qwen3_moe")
    attention = model.backbone.transformer_layers[0]._self_attention_layer
    query = keras.ops.convert_to_numpy(attention._query_dense.kernel).copy()  # (hidden, heads, width)
    query[:, [0, 3]] = 0.0
    attention._query_dense.kernel.assign(query)
    output = keras.ops.convert_to_numpy(attention._output_dense.kernel).copy()  # (heads, width, hidden)
    output[[0, 3]] = 0.0
    attention._output_dense.kernel.assign(output)
    tokens = _tokens(8)
    pruned, _ = tfprune.prune(model, "l1", rate=0.5, targets="heads")
    (layer,) = [layer for layer in pruned.layers if type(layer).__name__ == "Qwen3MoeAttention"]
    assert (layer.num_query_heads, layer.num_key_value_heads, layer.head_dim) == (2, 2, 4)
    full = _logits(pruned, tokens)
    np.testing.assert_allclose(full, _logits(model, tokens), atol=1e-5)
    np.testing.assert_allclose(decode_step_by_step(pruned, tokens), full, atol=1e-4)
