"""Data-driven criteria ("activation", "taylor") on keras-hub decoder LMs with calibration sequences."""

import sys

import keras
import numpy as np
import pytest

import tfprune
from tfprune import graph as graph_module

keras_hub = pytest.importorskip("keras_hub")
tf = pytest.importorskip("tensorflow")

from tests.surgery_helpers import decode_step_by_step as _decode_step_by_step  # noqa: E402
from tests.test_decoders import _CONFIG, VOCAB, _causal_lm  # noqa: E402

taylor_module = sys.modules["tfprune.criteria.taylor"]
HIDDEN, HEADS, HEAD_DIM = 32, 4, 8


def _calibration(seed=0, count=3, length=6, tokens=VOCAB):
    """Token batches as a keras-hub user has them: right-padded, with a padding mask."""
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(1, tokens, (count, length)).astype("int32")
    padding_mask = np.ones_like(token_ids)
    padding_mask[0, 4:] = 0  # two padded positions
    padding_mask[1, 5:] = 0
    token_ids[padding_mask == 0] = 0
    return {"token_ids": token_ids, "padding_mask": padding_mask}


def _scores(criterion, model, data, gqa="query_heads", hidden=False, **kwargs):
    """`(flat model, scores)`; `model` is flattened first unless it already is (flattening takes seconds)."""
    flat = graph_module.flatten(model) if graph_module.needs_flattening(model) else model
    graph = graph_module.build(flat, gqa=gqa, hidden=hidden)
    if criterion != "l1":
        kwargs["verbose"] = 0
    return flat, tfprune.criteria.get(criterion)(flat, graph, data=data, **kwargs)


def _node_tensor(flat, layer_name, inputs=False):
    node = tfprune._features.call_node(flat, layer_name)
    return node.input_tensors[0] if inputs else node.outputs[0]


def _masked_mean_abs(values, mask):
    """Mean of |values| `(batch, sequence, ..., channels)` over the unpadded tokens: `(channels,)`."""
    kept = np.abs(values[mask.astype(bool)])
    return kept.reshape(-1, kept.shape[-1]).mean(axis=0)


def test_activation_of_a_head_and_of_a_gated_unit_is_its_mean_absolute_value_over_unpadded_tokens():
    model = _causal_lm("llama")
    attention = model.backbone.transformer_layers[0]._self_attention_layer
    # An identity output projection: the attention layer's output is then every head's
    # context vector side by side, (batch, sequence, heads * head width), read from the graph.
    attention._output_dense.kernel.assign(np.eye(HIDDEN, dtype="float32").reshape(HEADS, HEAD_DIM, HIDDEN))
    data = _calibration()
    flat, scores = _scores("activation", model, data)
    reference = keras.Model(flat.inputs, [
        _node_tensor(flat, "transformer_layer_0_self_attention"),
        _node_tensor(flat, "transformer_layer_0_feedforward_output_dense", inputs=True),  # silu(gate) * up
    ])  # fmt: skip
    contexts, gated = (keras.ops.convert_to_numpy(value) for value in reference(data))
    mask = data["padding_mask"]
    contexts = contexts.reshape(contexts.shape[:2] + (HEADS, HEAD_DIM)).swapaxes(-1, -2)  # heads last
    per_head = _masked_mean_abs(contexts, mask)
    assert per_head.min() > 0
    # Query heads 0, 1 read key/value head 0; query heads 2, 3 key/value head 1.
    np.testing.assert_allclose(scores["transformer_layer_0_self_attention_heads_0"], per_head[:2], rtol=1e-5)
    np.testing.assert_allclose(scores["transformer_layer_0_self_attention_heads_1"], per_head[2:], rtol=1e-5)
    np.testing.assert_allclose(
        scores["transformer_layer_0_feedforward_intermediate_dense"], _masked_mean_abs(gated, mask), rtol=1e-5
    )
    _, groups = _scores("activation", flat, data, gqa="groups")
    np.testing.assert_allclose(
        groups["transformer_layer_0_self_attention_heads"], per_head.reshape(2, 2).mean(axis=1), rtol=1e-5
    )
    # Every position counted instead would give other scores.
    unpadded = _masked_mean_abs(contexts, np.ones_like(mask))
    assert not np.allclose(unpadded[:2], per_head[:2], rtol=1e-3)


def test_padded_positions_do_not_change_the_scores():
    model = graph_module.flatten(_causal_lm("gemma"))
    data = _calibration(1)
    other = dict(data, token_ids=np.where(data["padding_mask"] == 1, data["token_ids"], 7).astype("int32"))
    for criterion in ("activation", "taylor"):
        _, scores = _scores(criterion, model, data, hidden=True)
        _, scores_other = _scores(criterion, model, other, hidden=True)
        assert {name for name in scores if "heads" in name} and "token_embedding" in scores
        assert any(name.endswith("ffw_gating") for name in scores)
        for name in scores:
            np.testing.assert_allclose(scores_other[name], scores[name], rtol=1e-4, atol=1e-9)


def _next_token_loss(model, data):
    """Mean cross-entropy of each real token's successor, computed in NumPy from the logits."""
    logits = keras.ops.convert_to_numpy(model(data)).astype("float64")
    logits -= logits.max(axis=-1, keepdims=True)
    log_probabilities = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    tokens, mask = data["token_ids"], data["padding_mask"].astype(bool)
    losses, count = 0.0, 0
    for example in range(len(tokens)):
        for position in range(tokens.shape[1] - 1):
            if mask[example, position] and mask[example, position + 1]:
                losses -= log_probabilities[example, position, tokens[example, position + 1]]
                count += 1
    return losses / count


def _scaled_loss(model, data, weight, index, factor):
    value = keras.ops.convert_to_numpy(weight).copy()
    scaled = value.copy()
    scaled[index] *= factor
    weight.assign(scaled)
    try:
        return _next_token_loss(model, data)
    finally:
        weight.assign(value)


def test_taylor_score_is_the_derivative_of_the_next_token_loss_along_a_head_or_unit_gate():
    model = _causal_lm("llama")
    data = _calibration(2)
    flat, scores = _scores("taylor", model, data, batch_size=8)  # one batch: the score is |dL/dm|
    blocks = flat.get_layer("transformer_layer_1_self_attention"), flat.get_layer(
        "transformer_layer_1_feedforward_output_dense"
    )
    step = 1e-2
    cases = [
        (blocks[0]._output_dense.kernel, 3, scores["transformer_layer_1_self_attention_heads_1"][1]),  # query head 3
        (blocks[1].kernel, 5, scores["transformer_layer_1_feedforward_intermediate_dense"][5]),  # unit 5
    ]
    for weight, index, score in cases:
        # Removing a head or unit is a gate m = 0 on its rows of the consumer kernel;
        # the score is |dL/dm| at m = 1, here by central differences.
        derivative = (
            _scaled_loss(flat, data, weight, index, 1 + step) - _scaled_loss(flat, data, weight, index, 1 - step)
        ) / (2 * step)
        assert abs(derivative) > 1e-5
        np.testing.assert_allclose(score, abs(derivative), rtol=2e-2)


def test_taylor_next_token_default_equals_explicit_labels_and_sample_weights():
    model = _causal_lm("llama")
    data = _calibration(3)
    flat, default = _scores("taylor", model, data, batch_size=8)
    labels, weights = taylor_module.next_token_labels(data)
    dataset = tf.data.Dataset.from_tensor_slices((data, labels, weights)).batch(8)
    _, explicit = _scores("taylor", flat, dataset, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    for name in default:
        np.testing.assert_allclose(explicit[name], default[name], rtol=1e-6)


def _make_key_value_group_one_dead_on_the_calibration_tokens(model):
    """Key/value head 1 of block 0 reads hidden dims 16-31, which the calibration tokens' embeddings leave at 0.

    Its weights are large (magnitude keeps it) but its values, and so the
    contexts of query heads 2 and 3, are 0 on that data: it does nothing there.
    """
    backbone = model.backbone
    embeddings = keras.ops.convert_to_numpy(backbone.token_embedding.embeddings).copy()
    embeddings[1:10, HIDDEN // 2 :] = 0.0
    backbone.token_embedding.embeddings.assign(embeddings)
    attention = backbone.transformer_layers[0]._self_attention_layer
    value = keras.ops.convert_to_numpy(attention._value_dense.kernel).copy()  # (hidden, key/value heads, width)
    value[: HIDDEN // 2, 1] = 0.0
    value[HIDDEN // 2 :, 1] = 1.0
    attention._value_dense.kernel.assign(value)
    query = keras.ops.convert_to_numpy(attention._query_dense.kernel).copy()  # (hidden, query heads, width)
    query[:, 2:] *= 10.0
    attention._query_dense.kernel.assign(query)


def test_activation_removes_the_key_value_group_that_is_dead_on_the_data_where_magnitude_keeps_it():
    model = _causal_lm("llama")
    _make_key_value_group_one_dead_on_the_calibration_tokens(model)
    model = graph_module.flatten(model)
    data = _calibration(4, tokens=10)
    name = "transformer_layer_0_self_attention_heads"
    magnitude = _scores("l1", model, data, gqa="groups")[1][name]
    taylor = _scores("taylor", model, data, gqa="groups")[1][name]
    assert magnitude[1] > magnitude[0]  # magnitude would keep key/value group 1
    assert taylor[1] == 0.0 and taylor[0] > 0.0  # removing group 1 changes the loss by exactly nothing
    value = keras.ops.convert_to_numpy(model.get_layer(name[: -len("_heads")])._value_dense.kernel)
    targets = lambda group: group.name == name  # noqa: E731
    pruned, _ = tfprune.prune(model, "activation", rate=0.5, targets=targets, gqa="groups", data=data, verbose=0)
    layer = pruned.get_layer("transformer_layer_0_self_attention")
    assert (layer.num_query_heads, layer.num_key_value_heads) == (2, 1)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer._value_dense.kernel)[:, 0], value[:, 0])
    # The removed group did nothing on this data: the logits are those of the whole model.
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(pruned(data)), keras.ops.convert_to_numpy(model(data)), atol=1e-5
    )


@pytest.mark.parametrize("criterion", ["activation", "taylor"])
def test_causal_lm_pruned_with_calibration_sequences_decodes_with_a_cache_and_reloads(criterion, tmp_path):
    model = _causal_lm("llama")
    data = _calibration(5, count=4)
    dataset = tf.data.Dataset.from_tensor_slices(data).batch(2)  # a tf.data of {"token_ids", "padding_mask"}
    pruned, result = tfprune.prune(model, criterion, rate=0.5, targets="all", round_to=1, data=dataset, verbose=0)
    attention = [layer for layer in pruned.layers if hasattr(layer, "num_key_value_heads")]
    assert [(layer.num_query_heads, layer.num_key_value_heads) for layer in attention] == [(2, 2)] * 2
    assert {group.before: group.after for group in result.groups} == {2: 1, _CONFIG["intermediate_dim"]: 32}
    tokens = np.random.default_rng(6).integers(1, VOCAB, (2, 7)).astype("int32")
    full = keras.ops.convert_to_numpy(pruned({"token_ids": tokens, "padding_mask": np.ones_like(tokens)}))
    np.testing.assert_allclose(_decode_step_by_step(pruned, tokens), full, atol=1e-4)
    pruned.save(tmp_path / "pruned.keras")
    reloaded = keras.saving.load_model(tmp_path / "pruned.keras")
    again = keras.ops.convert_to_numpy(reloaded({"token_ids": tokens, "padding_mask": np.ones_like(tokens)}))
    np.testing.assert_allclose(again, full, atol=1e-6)


def test_calibration_data_that_does_not_match_the_inputs_is_refused_in_one_sentence():
    model = _causal_lm("llama")
    data = _calibration()
    with pytest.raises(ValueError, match=r"takes the inputs \['padding_mask', 'token_ids'\], but a batch of `data` has the keys \['tokens'\]"):  # fmt: skip
        tfprune.prune(model, "activation", rate=0.5, data={"tokens": data["token_ids"]}, verbose=0)
    flat = graph_module.flatten(model)
    graph = graph_module.build(flat)
    wrong = [
        (data["token_ids"], "takes 2 inputs .* so `data` must give each batch as a dict"),
        (dict(data, token_ids=data["token_ids"][:, :, None]), "expects input 'token_ids' of shape \\(None, None\\)"),
        (dict(data, padding_mask=data["padding_mask"][:2]), "different numbers of examples"),
    ]
    for criterion in (tfprune.criteria.activation, tfprune.criteria.taylor):
        for wrong_data, message in wrong:
            with pytest.raises(ValueError, match=message):
                criterion(flat, graph, data=wrong_data, verbose=0)


def test_hrank_leaves_heads_and_token_features_unscored():
    # HRank ranks 2-D conv feature maps; a head's (sequence x width) context is not one.
    _, scores = _scores("hrank", _causal_lm("llama"), _calibration())
    assert scores == {}


def test_docstring_examples():
    import doctest

    results = doctest.testmod(taylor_module, extraglobs={"np": np})
    assert results.attempted and not results.failed


def test_only_a_model_giving_one_logit_per_vocabulary_token_gets_the_next_token_loss():
    from tfprune.criteria.taylor import _is_causal_lm

    def token_model(units):
        token_ids = keras.Input((None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input((None,), dtype="int32", name="padding_mask")
        x = keras.layers.Embedding(VOCAB, 8)(token_ids)
        return keras.Model([token_ids, padding_mask], keras.layers.Dense(units)(x))

    assert _is_causal_lm(token_model(VOCAB))
    assert not _is_causal_lm(token_model(3))  # a token tagger on the same inputs
    assert _is_causal_lm(_causal_lm("llama"))  # the embedding inside the nested backbone
