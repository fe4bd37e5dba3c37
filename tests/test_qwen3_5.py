"""keras-hub's Qwen 3.5 and Qwen 3.5-MoE: gated attention heads, GatedDeltaNet value heads, experts."""

import keras
import numpy as np
import pytest

import tfprune

keras_hub = pytest.importorskip("keras_hub")
if not hasattr(keras_hub.models, "Qwen3_5Backbone"):
    pytest.skip("this keras-hub has no Qwen 3.5", allow_module_level=True)

from surgery_helpers import decode_step_by_step as _decode_step_by_step  # noqa: E402

VOCAB, LENGTH, WIDTH = 50, 7, 4
# A linear-attention block (GatedDeltaNet: 4 value heads over 2 key heads, width 4) and a
# full-attention block (4 query heads over 2 key/value heads, width 8).
_CONFIG = dict(vocabulary_size=VOCAB, num_layers=2, num_query_heads=4, num_key_value_heads=2, hidden_dim=16,
               head_dim=8, layer_types=["linear_attention", "full_attention"], linear_num_key_heads=2,
               linear_num_value_heads=4, linear_key_head_dim=WIDTH, linear_value_head_dim=WIDTH)  # fmt: skip


def _causal_lm(moe=False):
    keras.utils.set_random_seed(0)
    if moe:  # one full-attention block: the experts are what is tested (the linear attention is slow to run)
        config = {**_CONFIG, "num_layers": 1, "layer_types": ["full_attention"]}
        backbone = keras_hub.models.Qwen3_5MoeBackbone(**config, moe_intermediate_dim=16, num_experts=4, top_k=2,
                                                       shared_expert_intermediate_size=8)  # fmt: skip
        return keras_hub.models.Qwen3_5MoeCausalLM(backbone=backbone, preprocessor=None)
    backbone = keras_hub.models.Qwen3_5Backbone(**_CONFIG, intermediate_dim=32)
    return keras_hub.models.Qwen3_5CausalLM(backbone=backbone, preprocessor=None)


def _zero(weight, index, axis):
    value = keras.ops.convert_to_numpy(weight).copy()
    value[(slice(None),) * axis + (index,)] = 0.0
    weight.assign(value)


def _kill_heads(model, heads, key_heads=()):
    """Zeroes every weight of value heads `heads` of the GatedDeltaNet and of query heads `heads` of the
    attention (and, for `key_heads`, their queries and keys, or keys and values): dead heads."""
    delta_net = model.backbone.transformer_layers[0]._linear_attn
    columns = np.concatenate([np.arange(head * WIDTH, (head + 1) * WIDTH) for head in heads])
    _zero(delta_net.in_proj_z.kernel, columns, 1)
    _zero(delta_net.out_proj.kernel, columns, 0)
    _zero(delta_net.in_proj_qkv.kernel, 2 * delta_net.key_dim + columns, 1)  # [queries | keys | values]
    for dense in (delta_net.in_proj_a, delta_net.in_proj_b):
        _zero(dense.kernel, heads, 1)
    for head in key_heads:
        _zero(delta_net.in_proj_qkv.kernel, np.r_[head * WIDTH : (head + 1) * WIDTH], 1)
        _zero(delta_net.in_proj_qkv.kernel, delta_net.key_dim + np.r_[head * WIDTH : (head + 1) * WIDTH], 1)
    attention = model.backbone.transformer_layers[1]._self_attention_layer
    _zero(attention._query_dense.kernel, heads, 1)  # (hidden, heads, query and gate)
    _zero(attention._output_dense.kernel, heads, 0)  # (heads, width, hidden)
    for dense in (attention._key_dense, attention._value_dense):
        _zero(dense.kernel, list(key_heads), 1)


def _tokens(seed=0):
    return np.random.default_rng(seed).integers(1, VOCAB, (2, LENGTH)).astype("int32")


def _logits(model, tokens):
    return keras.ops.convert_to_numpy(model({"token_ids": tokens, "padding_mask": np.ones_like(tokens)}))


def _layer(model, class_name):
    (layer,) = [layer for layer in model.layers if type(layer).__name__ == class_name]
    return layer


def test_dead_heads_of_both_attentions_are_removed_within_each_group_and_the_model_decodes_and_reloads(tmp_path):
    model = _causal_lm()
    _kill_heads(model, [1, 2])  # head 1 of key group 0 and head 2 of key group 1, in both blocks
    tokens = _tokens()
    pruned, result = tfprune.prune(model, "l1", rate=0.5, targets="heads")
    assert {(group.before, group.after) for group in result.groups} == {(2, 1)} and len(result.groups) == 4
    delta_net = _layer(pruned, "Qwen3_5GatedDeltaNet")
    assert (delta_net.num_v_heads, delta_net.num_k_heads, tuple(delta_net.out_proj.kernel.shape)) == (2, 2, (8, 16))
    attention = _layer(pruned, "Qwen3_5Attention")
    assert (attention.num_query_heads, attention.num_key_value_heads) == (2, 2)
    full = _logits(pruned, tokens)
    np.testing.assert_allclose(full, _logits(model, tokens), atol=1e-5)
    # The GatedDeltaNet keeps its convolution and recurrent states in the cache, sized for its heads.
    _, cache = tfprune.decoding.build_cache(pruned, tokens, max_length=LENGTH)
    assert tuple(cache[delta_net.name][1].shape) == (2, 2, WIDTH, WIDTH)
    np.testing.assert_allclose(_decode_step_by_step(pruned, tokens), full, atol=1e-4)
    pruned.save(tmp_path / "pruned.keras")
    np.testing.assert_allclose(_logits(keras.saving.load_model(tmp_path / "pruned.keras"), tokens), full, atol=1e-6)


def test_a_dead_key_head_goes_with_its_value_heads():
    model = _causal_lm()
    _kill_heads(model, [2, 3], key_heads=[1])  # key head 1 and both its value (query) heads
    tokens = _tokens(1)
    pruned, result = tfprune.prune(model, "l1", rate=0.5, targets="heads", gqa="groups")
    assert {(group.before, group.after) for group in result.groups} == {(2, 1)} and len(result.groups) == 2
    delta_net = _layer(pruned, "Qwen3_5GatedDeltaNet")
    assert (delta_net.num_v_heads, delta_net.num_k_heads) == (2, 1)
    assert (_layer(pruned, "Qwen3_5Attention").num_key_value_heads) == 1
    np.testing.assert_allclose(_logits(pruned, tokens), _logits(model, tokens), atol=1e-5)


def test_the_linear_attention_prunes_whole_value_heads_only():
    graph = tfprune.graph.build(tfprune.graph.flatten(_causal_lm()))
    name = "transformer_layer_0_linear_attn"
    touching = {group.name: (group.size, group.prunable) for group in graph
                if any(member.layer_name == name for member in group.members)}  # fmt: skip
    # Its value heads (two per key head), its key heads (kept with gqa="query_heads") and the
    # hidden width (normalised): no group of channels inside a head.
    assert touching == {"token_embedding": (16, False), f"{name}_heads_0": (2, True), f"{name}_heads_1": (2, True),
                        f"{name}_key_heads": (2, False)}  # fmt: skip


def test_dead_expert_and_shared_expert_units_are_removed_without_changing_the_logits(tmp_path):
    model = _causal_lm(moe=True)
    dead, shared_dead = np.arange(1, 16, 2), np.arange(0, 8, 2)
    for block in model.backbone.transformer_layers:
        bank, shared = block.mlp.expert_bank, block.mlp.shared_expert
        _zero(bank._expert_feedforward_gate_dense, np.concatenate([dead, dead + 16]), 2)  # gate and up halves
        _zero(bank._expert_feedforward_output_dense, dead, 1)
        _zero(shared._feedforward_gate_dense.kernel, shared_dead, 1)
        _zero(shared._feedforward_output_dense.kernel, shared_dead, 0)
    tokens = _tokens(2)
    pruned, result = tfprune.prune(model, "l1", rate=0.5, round_to=1, targets="mlp")
    assert sorted((group.before, group.after) for group in result.groups) == [(8, 4), (16, 8)]
    full = _logits(pruned, tokens)
    np.testing.assert_allclose(full, _logits(model, tokens), atol=1e-5)
    pruned.save(tmp_path / "pruned.keras")
    np.testing.assert_allclose(_logits(keras.saving.load_model(tmp_path / "pruned.keras"), tokens), full, atol=1e-6)


def test_hidden_width_shrinks_through_the_gated_delta_net_and_export_is_refused_in_one_sentence(tmp_path):
    pruned, _ = tfprune.prune(_causal_lm(), "l1", rate=0.5, targets="hidden", round_to=1)
    delta_net = _layer(pruned, "Qwen3_5GatedDeltaNet")
    assert (delta_net.hidden_size, tuple(delta_net.in_proj_qkv.kernel.shape)) == (8, (8, 32))
    tokens = _tokens()
    logits = _logits(pruned, tokens)
    assert logits.shape == (2, LENGTH, VOCAB) and np.isfinite(logits).all()
    if keras.backend.backend() != "tensorflow":
        return
    with pytest.raises(ValueError, match=r"'transformer_layer_0_linear_attn' \(Qwen 3.5's GatedDeltaNet\) loops over "
                                         r"the sequence in Python, so it cannot run in a graph traced with an unknown"):
        tfprune.export.to_tflite(pruned, str(tmp_path / "small.tflite"), verbose=0,
                                 sample_inputs={"token_ids": tokens, "padding_mask": np.ones_like(tokens)})


def test_a_gated_delta_net_with_lora_projections_stays_whole():
    model = _causal_lm()
    model.backbone.transformer_layers[0]._linear_attn.in_proj_qkv.enable_lora(2)
    graph = tfprune.graph.build(tfprune.graph.flatten(model), unknown="freeze")
    assert not any("linear_attn" in group.name for group in graph)
    assert graph["transformer_layer_1_self_attention_heads_0"].prunable  # the other block still prunes
