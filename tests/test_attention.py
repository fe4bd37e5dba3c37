"""Attention heads as a prunable channel group: graph, surgery, criteria, MACs (issue 20, first part)."""

import warnings

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keras import layers
from surgery_helpers import kill_channels

import tfprune


def transformer(num_heads=4, key_dim=8, value_dim=None, length=10, width=16, cross_length=None, seed=0):
    """A one-block functional transformer: attention + residual + LayerNorm, then an MLP."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((length, width), name="tokens")
    x = layers.Dense(width, name="embed")(inputs)
    if cross_length is None:
        attended = layers.MultiHeadAttention(num_heads, key_dim, value_dim=value_dim, name="mha")(x, x)
        model_inputs = inputs
    else:
        memory_inputs = keras.Input((cross_length, width + 4), name="memory")
        memory = layers.Dense(width + 4, name="memory_embed")(memory_inputs)
        attended = layers.MultiHeadAttention(num_heads, key_dim, value_dim=value_dim, name="mha")(
            x, memory, memory
        )
        model_inputs = [inputs, memory_inputs]
    x = layers.LayerNormalization(name="ln")(layers.Add(name="residual")([x, attended]))
    hidden = layers.Dense(2 * width, activation="gelu", name="mlp_in")(x)
    x = layers.Add(name="mlp_residual")([x, layers.Dense(width, name="mlp_out")(hidden)])
    outputs = layers.Dense(3, name="head")(layers.GlobalAveragePooling1D(name="pool")(x))
    return keras.Model(model_inputs, outputs)


def sample(model, seed=1):
    rng = np.random.default_rng(seed)
    arrays = [rng.normal(size=(2,) + tuple(tensor.shape[1:])).astype("float32") for tensor in model.inputs]
    return arrays if len(arrays) > 1 else arrays[0]


def outputs(model, x):
    return keras.ops.convert_to_numpy(model(x))


def zero_heads(model, heads):
    dense = model.get_layer("mha")._output_dense
    kernel = keras.ops.convert_to_numpy(dense.kernel).copy()
    kernel[list(heads)] = 0.0
    dense.kernel.assign(kernel)


def assert_reloads_and_exports(small, x, tmp_path):
    """The pruned model reloads from `.keras` unchanged and (on TensorFlow) exports to LiteRT."""
    small.save(tmp_path / "small.keras")
    reloaded = keras.models.load_model(tmp_path / "small.keras")
    np.testing.assert_allclose(outputs(reloaded, x), outputs(small, x), atol=1e-6, rtol=0)
    if keras.backend.backend() == "tensorflow":
        report = tfprune.export.to_tflite(small, tmp_path / "small.tflite", sample_inputs=x, verbose=0)
        assert report.max_abs_error < 1e-4


def test_heads_are_one_group_and_the_hidden_width_is_prunable_only_on_request():
    model = transformer()
    graph = tfprune.graph.build(model)
    heads = graph["mha_heads"]
    assert heads.prunable and heads.size == 4 and heads.producers == ("mha",) and heads.heads_of == "mha"
    assert {(member.layer_name, member.role) for member in heads.members} == {("mha", "output"), ("mha", "input")}
    hidden = graph["embed"]
    assert not hidden.prunable and hidden.normalized_by == ("ln",) and hidden.heads_of is None
    assert "'ln' normalises over its channels" in hidden.reason and "targets='hidden'" in hidden.reason
    # The residual stream: the embedding, the attention's projections in and out, the MLP.
    roles = {(member.layer_name, member.role) for member in hidden.members}
    assert roles >= {("embed", "output"), ("mha", "input"), ("mha", "output"), ("ln", "param"),
                     ("mlp_in", "input"), ("mlp_out", "output"), ("head", "input")}  # fmt: skip
    assert graph["mlp_in"].prunable and graph["mlp_in"].normalized_by == ()
    assert tfprune.graph.build(model, hidden=True)["embed"].prunable
    with pytest.raises(TypeError, match="`hidden` must be True or False"):
        tfprune.graph.build(model, hidden="yes")


def without_normalization(width=12, seed=0):
    """Attention and MLP blocks on a residual stream with no LayerNormalization."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 5), name="tokens")
    x = layers.Dense(width, name="embed")(inputs)
    x = layers.Add(name="residual")([x, layers.MultiHeadAttention(3, 4, name="mha")(x, x)])
    hidden = layers.Dense(2 * width, activation="gelu", name="mlp_in")(x)
    x = layers.Add(name="mlp_residual")([x, layers.Dense(width, name="mlp_out")(hidden)])
    return keras.Model(inputs, layers.Dense(3, name="head")(layers.GlobalAveragePooling1D(name="pool")(x)))


def zero_hidden_channels(model, channels):
    """Zeroes every weight that writes the given residual-stream channels: they are then always 0."""
    for name in ("embed", "mlp_out"):
        layer = model.get_layer(name)
        kernel, bias = (keras.ops.convert_to_numpy(weight).copy() for weight in (layer.kernel, layer.bias))
        kernel[:, channels], bias[channels] = 0.0, 0.0
        layer.kernel.assign(kernel)
        layer.bias.assign(bias)
    dense = model.get_layer("mha")._output_dense
    kernel, bias = (keras.ops.convert_to_numpy(weight).copy() for weight in (dense.kernel, dense.bias))
    kernel[..., channels], bias[channels] = 0.0, 0.0
    dense.kernel.assign(kernel)
    dense.bias.assign(bias)


def test_removing_dead_hidden_channels_without_normalization_keeps_outputs(tmp_path):
    model = without_normalization()
    graph = tfprune.graph.build(model)
    assert graph["embed"].prunable and graph["embed"].normalized_by == ()  # no statistics to change
    zero_hidden_channels(model, [1, 4, 7, 10])
    small = tfprune.surgery.remove_channels(model, {"embed": [1, 4, 7, 10]})
    mha = small.get_layer("mha")
    assert small.get_layer("embed").units == 8 and tuple(mha._query_dense.kernel.shape) == (8, 3, 4)
    assert tuple(mha._output_dense.kernel.shape) == (3, 4, 8) and mha.get_config()["output_shape"] is None
    x = sample(model)
    np.testing.assert_allclose(outputs(small, x), outputs(model, x), atol=1e-5, rtol=0)
    small.save(tmp_path / "small.keras")
    np.testing.assert_allclose(outputs(keras.models.load_model(tmp_path / "small.keras"), x),
                               outputs(small, x), atol=1e-6, rtol=0)  # fmt: skip


def test_attention_output_width_of_its_own_is_pruned_like_dense_units():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 10), name="tokens")
    attended = layers.MultiHeadAttention(2, 4, output_shape=12, name="mha")(inputs, inputs)
    model = keras.Model(inputs, layers.Dense(3, name="head")(layers.GlobalAveragePooling1D(name="pool")(attended)))
    graph = tfprune.graph.build(model)
    assert graph["mha"].prunable and graph["mha"].size == 12 and graph["mha"].producers == ("mha",)
    dense = model.get_layer("mha")._output_dense
    kernel = keras.ops.convert_to_numpy(dense.kernel).copy()
    bias = keras.ops.convert_to_numpy(dense.bias).copy()
    kernel[..., [0, 5]], bias[[0, 5]] = 0.0, 0.0
    dense.kernel.assign(kernel)
    dense.bias.assign(bias)
    small = tfprune.surgery.remove_channels(model, {"mha": [0, 5]})
    assert small.get_layer("mha").get_config()["output_shape"] in (10, (10,), [10])
    x = sample(model)
    np.testing.assert_allclose(outputs(small, x), outputs(model, x), atol=1e-5, rtol=0)


def test_prune_half_of_the_hidden_width_runs_reloads_exports_and_says_what_changed(tmp_path):
    model = transformer()
    small, result = tfprune.prune(model, "l1", rate=0.5, targets="hidden", round_to=1)
    assert result.widths_after == {"embed": 8} and result.renormalized == ("ln",)
    assert "normalisation statistics changed in 1 layer(s) (ln)" in str(result)
    assert result.to_dict()["renormalized"] == ["ln"]
    assert [tuple(w.shape) for w in small.get_layer("ln").weights] == [(8,), (8,)]
    assert small.get_layer("mha")._query_dense.kernel.shape[0] == 8 and small.get_layer("mlp_out").units == 8
    assert result.macs_reduction > 0.3
    x = sample(model)
    assert_reloads_and_exports(small, x, tmp_path)
    # The statistics change: even channels whose weights are all zero change the outputs.
    dead = transformer()
    zero_hidden_channels(dead, [0, 1])
    pruned = tfprune.surgery.remove_channels(dead, {"embed": [0, 1]})
    assert np.abs(outputs(pruned, x) - outputs(dead, x)).max() > 1e-4


def test_token_embeddings_and_a_class_token_slice_carry_the_hidden_width():
    keras.utils.set_random_seed(0)
    ids = keras.Input((7,), dtype="int32", name="ids")
    x = layers.Embedding(20, 12, name="tokens")(ids)
    x = layers.LayerNormalization(name="ln")(x)
    first = x[:, 0]  # the class-token slice keeps the channel axis whole
    model = keras.Model(ids, layers.Dense(2, name="head")(first))
    graph = tfprune.graph.build(model, hidden=True)
    assert graph["tokens"].prunable and graph["tokens"].size == 12
    small, result = tfprune.prune(model, "l1", rate=0.5, targets="hidden", round_to=1)
    assert small.get_layer("tokens").output_dim == 6 and result.renormalized == ("ln",)
    kept = np.argsort(-np.abs(keras.ops.convert_to_numpy(model.get_layer("tokens").embeddings)).sum(0),
                      kind="stable")[:6]  # fmt: skip
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(small.get_layer("tokens").embeddings),
                                  keras.ops.convert_to_numpy(model.get_layer("tokens").embeddings)[:, np.sort(kept)])
    tokens = np.random.default_rng(0).integers(0, 20, (3, 7)).astype("int32")
    assert outputs(small, tokens).shape == (3, 2)
    # A slice that picks channels is a constant of the graph: those channels stay.
    picked = keras.Model(ids, layers.Dense(2, name="head")(x[..., :4]))
    group = tfprune.graph.build(picked, hidden=True)["tokens"]
    assert not group.prunable and "indexes the channel axis" in group.reason
    # Over a sequence of unknown length, x[:, 1] and x[:, -2] keep the channel axis whole too.
    ids = keras.Input((None,), dtype="int32", name="ids")
    x = layers.Embedding(20, 12, name="tokens")(ids)
    for token in (1, -2):
        model = keras.Model(ids, layers.Dense(2, name="head")(x[:, token]))
        assert tfprune.graph.build(model)["tokens"].prunable


def test_lora_embedding_is_frozen_by_name():
    ids = keras.Input((7,), dtype="int32", name="ids")
    embedding = layers.Embedding(20, 12, name="tokens")
    x = embedding(ids)
    embedding.enable_lora(2)
    model = keras.Model(ids, layers.Dense(2, name="head")(layers.GlobalAveragePooling1D()(x)))
    group = tfprune.graph.build(model)["tokens"]
    assert not group.prunable and "'tokens' is LoRA-enabled or quantized" in group.reason


# Keras 3.15 on JAX cannot run MultiHeadAttention with value_dim != key_dim at all
# (its JAX dot-product attention checks the value against the key's shape).
_JAX_VALUE_DIM = pytest.mark.skipif(keras.backend.backend() == "jax",
                                    reason="Keras on JAX cannot run value_dim != key_dim")  # fmt: skip


@pytest.mark.parametrize("case", [
    {"num_heads": 4, "key_dim": 8},
    pytest.param({"num_heads": 3, "key_dim": 4, "value_dim": 6}, marks=_JAX_VALUE_DIM),
    {"num_heads": 5, "key_dim": 3, "cross_length": 7},
    pytest.param({"num_heads": 2, "key_dim": 5, "value_dim": 3, "length": 4, "width": 6, "cross_length": 9},
                 marks=_JAX_VALUE_DIM),
], ids=["self", "value-dim", "cross", "small-cross"])  # fmt: skip
def test_removing_heads_whose_output_rows_are_zero_changes_nothing(case):
    model = transformer(**case)
    rng = np.random.default_rng(case["num_heads"])
    removed = sorted(rng.choice(case["num_heads"], case["num_heads"] // 2, replace=False).tolist())
    zero_heads(model, removed)
    small = tfprune.surgery.remove_channels(model, {"mha_heads": removed})
    assert small.get_layer("mha").num_heads == case["num_heads"] - len(removed)
    assert small.count_params() < model.count_params()
    x = sample(model)
    np.testing.assert_allclose(outputs(small, x), outputs(model, x), atol=1e-5, rtol=0)


def test_removing_live_heads_changes_the_outputs():
    model = transformer()
    small = tfprune.surgery.remove_channels(model, {"mha_heads": [0, 2]})
    x = sample(model)
    assert np.abs(outputs(small, x) - outputs(model, x)).max() > 1e-4  # the test above can fail


def test_prune_half_of_the_heads_and_mlp_units_runs_reloads_and_exports(tmp_path):
    model = transformer()
    for targets, group in (("heads", "mha_heads"), ("mlp", "mlp_in")):
        _, result = tfprune.prune(model, "l1", rate=0.5, targets=targets, round_to=1)
        assert list(result.widths_after) == [group]
    small, result = tfprune.prune(model, "l1", rate=0.5, round_to=1)
    assert result.widths_after == {"mha_heads": 2, "mlp_in": 16}
    assert small.get_layer("mha").num_heads == 2 and small.get_layer("mlp_in").units == 16
    assert result.macs_reduction > 0.2
    x = sample(model)
    assert_reloads_and_exports(small, x, tmp_path)


def test_default_round_to_does_not_round_heads(tmp_path):
    model = transformer(num_heads=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # heads and MLP units lose what was asked: no warning
        small, result = tfprune.prune(model, "l1", rate=0.5)  # round_to=8
    assert result.widths_after == {"mha_heads": 2, "mlp_in": 16}
    assert small.get_layer("mha").num_heads == 2
    assert_reloads_and_exports(small, sample(model), tmp_path)
    # 0.3 of 12 heads asks 3.6: 3 go (25%), never more than asked; 16 heads at 0.5 lose 8.
    for num_heads, rate, kept in ((12, 0.3, 9), (16, 0.5, 8)):
        _, result = tfprune.prune(transformer(num_heads=num_heads, key_dim=2), "l1", rate=rate, targets="heads")
        assert result.widths_after == {"mha_heads": kept}
    # A rate that asks less than one head says so, and the result says nothing changed.
    with pytest.warns(UserWarning, match=r"removed no channel.*'mha_heads' \(0 of 0.4 heads removed: the rate asks "
                                         r"for less than one of its 4 heads\)"):  # fmt: skip
        _, result = tfprune.prune(model, "l1", rate=0.1, targets="heads")
    assert result.unchanged


def test_head_magnitude_is_the_norm_of_its_projection_weights():
    model = transformer()
    mha = model.get_layer("mha")
    scores = tfprune.criteria.get("l1")(model, tfprune.graph.build(model))["mha_heads"]
    expected = [
        sum(np.abs(keras.ops.convert_to_numpy(dense.kernel)[:, head]).sum()
            for dense in (mha._query_dense, mha._key_dense, mha._value_dense))
        for head in range(4)
    ]  # fmt: skip
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_attention_macs_follow_the_sequence_lengths():
    model = transformer(num_heads=4, key_dim=8, value_dim=6, length=10, width=16, cross_length=7)
    # Q: 10x16x4x8, K and V: 7x20x4x8 and 7x20x4x6, QK^T: 4x10x7x8, AV: 4x10x7x6, out: 10x4x6x16
    expected = 10 * 16 * 32 + 7 * 20 * 32 + 7 * 20 * 24 + 4 * 10 * 7 * 8 + 4 * 10 * 7 * 6 + 10 * 24 * 16
    analysis = tfprune.analyze(model)
    assert analysis["mha"].macs == expected
    assert analysis.complete


@pytest.mark.parametrize("use_gate, return_scores", [(True, False), (False, True)])
def test_gated_attention_and_returned_scores_keep_their_heads(use_gate, return_scores):
    inputs = keras.Input((6, 8))
    x = layers.Dense(8, name="embed")(inputs)
    attention = layers.MultiHeadAttention(2, 4, use_gate=use_gate, name="mha")
    result = attention(x, x, return_attention_scores=return_scores)
    model = keras.Model(inputs, result)
    graph = tfprune.graph.build(model)
    assert "mha_heads" not in graph
    assert not graph["embed"].prunable
    why = "is a gated attention layer (use_gate=True)" if use_gate else "returns its attention scores"
    assert f"'mha' {why}" in graph["embed"].reason


def test_grouped_query_attention_has_one_head_group_per_key_value_head():
    # GroupQueryAttention(head_dim=8, num_query_heads=4, num_key_value_heads=2); tests/test_decoders.py prunes it.
    inputs = keras.Input((6, 8))
    x = layers.Dense(8, name="embed")(inputs)
    attended = layers.GroupQueryAttention(8, 4, 2, name="gqa")(x, x)
    graph = tfprune.graph.build(keras.Model(inputs, attended))
    assert [(group.size, group.heads_of) for group in graph if group.name.startswith("gqa_heads")] == [(2, "gqa")] * 2


def test_an_attention_mask_is_not_taken_for_the_key():
    keras.utils.set_random_seed(0)
    tokens = keras.Input((6, 8), name="tokens")
    mask = keras.Input((6, 5), dtype="bool", name="mask")
    memory = keras.Input((5, 12), name="memory")
    x = layers.Dense(8, name="embed")(tokens)
    attended = layers.MultiHeadAttention(4, 3, name="mha")(x, memory, attention_mask=mask)
    model = keras.Model([tokens, mask, memory], layers.Dense(2, name="head")(layers.Add()([x, attended])))
    zero_heads(model, [1, 2])
    small = tfprune.surgery.remove_channels(model, {"mha_heads": [1, 2]})
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(2, 6, 8)).astype("float32"), rng.random((2, 6, 5)) > 0.3,
         rng.normal(size=(2, 5, 12)).astype("float32")]  # fmt: skip
    np.testing.assert_allclose(outputs(small, x), outputs(model, x), atol=1e-5, rtol=0)
    # Q: 6x8x4x3, K and V: 5x12x4x3 each, QK^T and AV: 4x6x5x3 each, out: 6x12x8
    assert tfprune.analyze(model)["mha"].macs == 6 * 8 * 12 + 2 * 5 * 12 * 12 + 2 * 4 * 6 * 5 * 3 + 6 * 12 * 8


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_removing_dead_heads_of_random_transformers_keeps_outputs(data):
    """Random small transformers (heads, widths, lengths, self or cross attention, MLP): dead heads go freely."""
    draw = data.draw
    num_heads = draw(st.integers(2, 5), label="heads")
    key_dim = draw(st.integers(1, 6), label="key_dim")
    # Keras on JAX cannot run value_dim != key_dim (see _JAX_VALUE_DIM).
    value_dim = key_dim if keras.backend.backend() == "jax" else draw(st.integers(1, 6), label="value_dim")
    case = dict(num_heads=num_heads, key_dim=key_dim, value_dim=value_dim, length=draw(st.integers(1, 6)),
                width=draw(st.integers(2, 9)), cross_length=draw(st.none() | st.integers(1, 5)),
                seed=draw(st.integers(0, 10_000)))  # fmt: skip
    model = transformer(**case)
    removed = sorted(draw(st.sets(st.integers(0, num_heads - 1), min_size=1, max_size=num_heads - 1), label="removed"))
    zero_heads(model, removed)
    small = tfprune.surgery.remove_channels(model, {"mha_heads": removed})
    assert small.get_layer("mha").num_heads == num_heads - len(removed)
    x = sample(model, seed=case["seed"])
    np.testing.assert_allclose(outputs(small, x), outputs(model, x), atol=1e-5, rtol=0)


def test_activation_criterion_scores_transformer_mlp_units():
    model = transformer()
    data = sample(model)
    scores = tfprune.criteria.get("activation")(model, tfprune.graph.build(model), data=data, verbose=0)
    assert set(scores) >= {"mlp_in"} and scores["mlp_in"].shape == (32,)
    small, result = tfprune.prune(model, "activation", rate=0.5, targets="mlp", data=data, round_to=1, verbose=0)
    assert result.widths_after == {"mlp_in": 16}


def test_hidden_width_that_is_the_model_output_is_refused_with_the_reason():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 8), name="tokens")
    x = layers.Dense(8, name="embed")(inputs)
    x = layers.LayerNormalization(name="ln")(layers.Add()([x, layers.MultiHeadAttention(2, 4, name="mha")(x, x)]))
    backbone = keras.Model(inputs, x)  # returns its hidden states, as a backbone does
    with pytest.raises(ValueError, match=r"targets=.hidden. finds no hidden width .* model output .*, so prune the task model"):
        tfprune.prune(backbone, "l1", rate=0.5, targets="hidden")
    _, result = tfprune.prune(backbone, "l1", rate=0.5, targets="heads", round_to=1)
    assert result.widths_after == {"mha_heads": 1}


def einsum_projections(equation_in="btd,ndh->btnh", bias_axes="nh"):
    """keras-hub's attention projections written with EinsumDense: a per-head width between two einsums."""
    keras.utils.set_random_seed(0)
    tokens = keras.Input((6, 8), name="tokens")
    x = layers.EinsumDense(equation_in, output_shape=(6, 2, 4), bias_axes=bias_axes, name="proj")(tokens)
    x = layers.EinsumDense("btnh,nhd->btd", output_shape=(6, 8), bias_axes="d", name="out")(layers.ReLU()(x))
    x = layers.EinsumDense("abc,cd->abd", output_shape=(6, 5), bias_axes="d", name="ff")(layers.Add()([tokens, x]))
    return keras.Model(tokens, layers.Dense(3, name="head")(layers.GlobalAveragePooling1D()(x)))


def test_einsum_dense_projections_prune_like_dense_layers(tmp_path):
    model = einsum_projections()
    graph = tfprune.graph.build(model)
    assert graph["proj"].size == 4 and graph["proj"].consumers == ("out",)  # h, shared by the heads
    assert graph["ff"].size == 5 and graph["ff"].prunable
    x = sample(model)
    dead = {"proj": [1], "ff": [0, 2]}
    for name, channels in dead.items():  # nothing reads them any more
        for member in graph[name].members:
            if member.role == "input":
                layer = model.get_layer(member.layer_name)
                kernel = keras.ops.convert_to_numpy(layer.kernel).copy()
                kernel[(slice(None),) * member.weights[0][1] + (channels,)] = 0.0
                layer.kernel.assign(kernel)
    small = tfprune.surgery.remove_channels(model, dead)
    np.testing.assert_allclose(outputs(small, x), outputs(model, x), atol=1e-5, rtol=0)
    assert tuple(small.get_layer("proj").kernel.shape) == (2, 8, 3)
    assert tuple(small.get_layer("proj").bias.shape) == (2, 3)
    assert tuple(small.get_layer("out").kernel.shape) == (2, 3, 8)
    assert tuple(small.get_layer("ff").kernel.shape) == (8, 3)
    assert_reloads_and_exports(small, x, tmp_path)
    # MACs: each input entry times the kernel entries along the letters the input lacks.
    macs = {record.name: record.macs for record in tfprune.analyze(model).layers}
    assert macs["proj"] == 6 * 8 * 2 * 4 and macs["out"] == 6 * 2 * 4 * 8 and macs["ff"] == 6 * 8 * 5
    assert tfprune.analyze(small).macs < tfprune.analyze(model).macs


@pytest.mark.parametrize("equation, output_shape, reason", [
    ("bt...,th->bh...", (4,), "elides its channel axis"),
    ("btd,d->btd", (6, 8), "does not contract its input channels with the kernel"),
    ("btd,dh->bht", (4, 6), "does not make its output channels from the kernel's last axis"),
    ("btd,hd->bth", (6, 4), "does not make its output channels from the kernel's last axis"),
])  # fmt: skip
def test_einsum_dense_equations_that_do_not_map_channels_are_frozen_by_name(equation, output_shape, reason):
    tokens = keras.Input((6, 8), name="tokens")
    x = layers.Dense(8, name="embed")(tokens)
    x = layers.EinsumDense(equation, output_shape=output_shape, name="einsum")(x)
    model = keras.Model(tokens, layers.Dense(2, name="head")(layers.Flatten()(x)))
    graph = tfprune.graph.build(model)
    assert f"'einsum' {reason}" in graph["embed"].reason  # its input channels stay
    assert f"'einsum' {reason}" in graph["einsum"].reason  # nor do its output channels shrink


def test_token_ids_of_any_length_with_a_padding_mask_prune_and_run(tmp_path):
    # Input((None,), int32): the ids' last axis is the sequence, not channels.
    keras.utils.set_random_seed(0)
    ids = keras.Input((None,), dtype="int32", name="ids")
    x = layers.Embedding(20, 12, name="tokens")(ids)
    mask = keras.ops.expand_dims(keras.ops.cast(keras.ops.not_equal(ids, 0), "float32"), -1)
    x = layers.MultiHeadAttention(2, 4, name="mha")(x * mask, x * mask)
    model = keras.Model(ids, layers.Dense(2, name="head")(layers.Dense(16, activation="relu", name="fc")(x[:, 0])))
    small, result = tfprune.prune(model, "l1", rate=0.5, round_to=1)
    assert result.widths_after == {"tokens": 6, "mha_heads": 1, "mha": 6, "fc": 8}
    for length in (5, 9):
        tokens = np.random.default_rng(length).integers(0, 20, (2, length)).astype("int32")
        assert outputs(small, tokens).shape == (2, 2)
    small.save(tmp_path / "small.keras")
    np.testing.assert_allclose(outputs(keras.models.load_model(tmp_path / "small.keras"), tokens),
                               outputs(small, tokens), atol=1e-6)  # fmt: skip


def test_a_float_mask_of_any_length_and_a_per_sample_scalar_input_are_no_channels():
    # Input((None,)) float (a padding mask) and Input(()) (a diffusion timestep) carry
    # no weight's channels: they stand as one pinned channel, and the rest prunes.
    keras.utils.set_random_seed(0)
    ids = keras.Input((None,), dtype="int32", name="ids")
    mask = keras.Input((None,), dtype="float32", name="mask")
    scale = keras.Input((), dtype="float32", name="scale")
    x = layers.Embedding(20, 8, name="tokens")(ids) * keras.ops.expand_dims(mask, -1)
    x = layers.Dense(16, activation="relu", name="fc")(x) * keras.ops.reshape(scale, (-1, 1, 1))
    model = keras.Model([ids, mask, scale], layers.Dense(2, name="head")(x[:, 0]))
    graph = tfprune.graph.build(model)
    assert not graph["mask"].prunable and not graph["scale"].prunable
    small, result = tfprune.prune(model, "l1", rate=0.5, round_to=1)
    assert result.widths_after["fc"] == 8
    sample = [np.ones((2, 5), "int32"), np.ones((2, 5), "float32"), np.full((2,), 0.5, "float32")]
    assert outputs(small, sample).shape == (2, 2)


@pytest.mark.parametrize("tie_weights", [True, False])
def test_reversible_embedding_shares_the_hidden_width_with_its_logits(tie_weights, tmp_path):
    # A language model's token table is also its output projection (reverse=True).
    keras.utils.set_random_seed(0)
    ids = keras.Input((7,), dtype="int32", name="ids")
    table = layers.ReversibleEmbedding(30, 12, tie_weights=tie_weights, name="table")
    x = table(ids)
    hidden = layers.Dense(24, activation="relu", name="fc")(x)
    x = layers.Add()([x, layers.Dense(12, name="proj")(hidden)])
    model = keras.Model(ids, table(x, reverse=True))
    graph = tfprune.graph.build(model)
    group = graph["table"]
    assert group.prunable and group.size == 12
    assert not graph["table_logits"].prunable and "one logit per entry of its vocabulary" in graph["table_logits"].reason
    kill_channels(model, group, [0, 5], roles=("output", "param", "input"))
    small = tfprune.surgery.remove_channels(model, {"table": [0, 5]})
    tokens = np.random.default_rng(0).integers(0, 30, (2, 7)).astype("int32")
    np.testing.assert_allclose(outputs(small, tokens), outputs(model, tokens), atol=1e-5, rtol=0)
    assert tuple(small.get_layer("table").embeddings.shape) == (30, 10)
    if not tie_weights:
        assert tuple(small.get_layer("table").reverse_embeddings.shape) == (10, 30)
    small.save(tmp_path / "lm.keras")
    np.testing.assert_allclose(outputs(keras.models.load_model(tmp_path / "lm.keras"), tokens),
                               outputs(small, tokens), atol=1e-6)  # fmt: skip
