"""Channel rules met in keras-hub models (issue 28): `keras.ops` einsum, stack, tile,
top_k and map, broadcasting against tensors of unknown width or against constants,
layers whose weights are single numbers, empty outputs, and coupling failures that
name the operation."""

import re

import keras
import numpy as np
import pytest
from keras import layers, ops
from surgery_helpers import all_outputs as _all_outputs
from surgery_helpers import assert_dead_channels_leave_no_trace, outputs

import tfprune


def _random(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def einsum_attention(length=5, width=8, key_width=6, value_width=7):
    """Attention written with `ops.einsum`, as keras-hub's video and diffusion models do."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((length, width), name="tokens")
    query = layers.Dense(key_width, name="query")(inputs)
    key = layers.Dense(key_width, name="key")(inputs)
    value = layers.Dense(value_width, name="value")(inputs)
    scores = ops.softmax(ops.einsum("bqd,bkd->bqk", query, key), axis=-1)
    attended = ops.einsum("bqk,bkd->bqd", scores, value)
    gated = ops.einsum("bqd,bd->bqd", attended, layers.Dense(value_width, name="gate")(inputs[:, 0]))
    hidden = layers.Dense(9, activation="relu", name="hidden")(gated)
    return keras.Model(inputs, layers.Dense(3, name="head")(hidden))


def test_einsum_couples_contracted_channel_axes_and_passes_the_output_channels(tmp_path):
    model = einsum_attention()
    graph = tfprune.graph.build(model)
    # Query and key channels are summed over together: one group.
    assert graph["query"].prunable and set(graph["query"].producers) == {"query", "key"}
    # The values' channels become the output's, multiplied channel by channel by the gate.
    assert graph["value"].prunable and set(graph["value"].producers) == {"value", "gate"}
    assert set(graph["value"].consumers) == {"hidden"}
    x = _random((2, 5, 8))
    assert_dead_channels_leave_no_trace(model, "query", [1, 4], x, tmp_path)
    model = einsum_attention()
    small = assert_dead_channels_leave_no_trace(model, "value", [0, 6], x, tmp_path)
    assert small.get_layer("hidden").kernel.shape == (5, 9)


def test_removing_live_einsum_channels_changes_the_outputs():
    # The check above is not vacuous: the same removal without zeroed weights shows.
    model = einsum_attention()
    small = tfprune.surgery.remove_channels(model, {"query": [1, 4]})
    x = _random((2, 5, 8))
    assert np.abs(outputs(small, x) - outputs(model, x)).max() > 1e-4


@pytest.mark.parametrize("equation, reason", [
    ("btd->bt", "sums over them"),
    ("btd->bdt", "moves them to another axis"),
    ("btd,de->bte", "contracts them with an axis that is not a channel axis"),
    ("btd,bte->bde", "moves them to another axis"),
    ("btd,bsd->bts", "contracts channel axes of different sizes"),
    ("...d->...", "elides the channel axis"),
    ("btd,btd->", "makes a scalar"),
    ("btdd->btd", "repeats a letter"),
])  # fmt: skip
def test_einsum_equations_that_do_not_map_channels_pin_them_with_the_reason(equation, reason):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 6), name="tokens")
    x = layers.Dense(6, name="producer")(inputs)
    operands = {
        "btd,de->bte": (x, np.ones((6, 2), "float32")),
        "btd,bte->bde": (x, layers.Dense(6, name="other")(inputs)),
        "btd,bsd->bts": (x, layers.Dense(1, name="narrow")(inputs)),
        "btdd->btd": (x[..., None] * x[:, :, None],),
    }.get(equation, (x,) * (1 + equation.split("->")[0].count(",")))
    result = ops.einsum(equation, *operands)
    result = ops.reshape(result, (-1, 1)) if len(result.shape) < 2 else result
    model = keras.Model(inputs, layers.Dense(2, name="head")(result))
    graph = tfprune.graph.build(model)
    assert not graph["producer"].prunable
    reasons = [group.reason for group in graph if "'einsum'" in group.reason]
    assert any(re.search(reason, why) for why in reasons), reasons


def test_a_tensor_of_unknown_width_broadcast_against_channels_pins_them():
    # A `(batch,)` per-sample scalar, or a last axis of any length, times 16 channels: it
    # may be 1 (a broadcast) or 16 (channel by channel), which only running tells.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 3), name="features")
    scales = keras.Input((None,), name="scales")
    x = layers.Dense(16, name="fc")(inputs)
    x = x * ops.expand_dims(scales, 1)
    model = keras.Model([inputs, scales], layers.Dense(2, name="head")(layers.Dense(8, name="mlp")(x)))
    graph = tfprune.graph.build(model)
    assert not graph["fc"].prunable and "unknown size" in graph["fc"].reason
    assert graph["mlp"].prunable
    for width in (1, 16):
        assert outputs(model, [_random((2, 4, 3)), _random((2, width))]).shape == (2, 4, 2)


def test_a_constant_widening_the_channel_axis_makes_pinned_channels_of_its_width(tmp_path):
    # A diffusion timestep `(batch, 1)` times `(1, F)` frequencies: F channels made here.
    keras.utils.set_random_seed(0)
    timestep = keras.Input((1,), name="timestep")
    frequencies = np.linspace(0.0, 1.0, 6, dtype="float32")[None]
    x = ops.concatenate([ops.sin(timestep * frequencies), ops.cos(timestep * frequencies)], axis=-1)
    hidden = layers.Dense(8, activation="silu", name="mlp")(x)
    model = keras.Model(timestep, layers.Dense(2, name="head")(hidden))
    graph = tfprune.graph.build(model)
    assert not graph["timestep"].prunable
    assert graph["mlp"].prunable and graph["mlp"].size == 8
    x = _random((4, 1))
    assert_dead_channels_leave_no_trace(model, "mlp", [2, 3], x, tmp_path)


class _Coupler(layers.Layer):
    def call(self, x, y):
        return x + ops.mean(y, axis=-1, keepdims=True)


class _BadHandler(tfprune.graph.Handler):
    """A handler that (wrongly) couples its two inputs channel by channel."""

    def trace(self, node, tracer):
        left, right = (tracer.channels(tensor) for tensor in node.input_tensors)
        tracer.couple(left, right)
        return [left]


def test_a_coupling_of_different_widths_is_refused_naming_the_operation():
    inputs = keras.Input((4,), name="features")
    x = _Coupler(name="coupler")(layers.Dense(3, name="a")(inputs), layers.Dense(5, name="b")(inputs))
    model = keras.Model(inputs, x)
    tfprune.graph.register_handler(_Coupler, _BadHandler())
    try:
        with pytest.raises(ValueError, match=r"operation 'coupler' \(_Coupler\).*cannot couple channel axes of sizes 3 and 5"):
            tfprune.graph.build(model)
    finally:
        tfprune.handlers._HANDLERS.pop(_Coupler)


class _WithEmptyCache(layers.Layer):
    """Like keras-hub's EdRec decoder block: returns empty tensors for the caches it was not given."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(), initializer="ones", name="scale")  # not inlined

    def call(self, x):
        return x * self.scale, ops.zeros((0,))

    def compute_output_spec(self, x):
        return keras.KerasTensor(x.shape, x.dtype), keras.KerasTensor((0,), x.dtype)


def test_an_empty_output_of_a_frozen_layer_is_no_channel_group(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,), name="features")
    x, _ = _WithEmptyCache(name="block")(layers.Dense(4, name="before")(inputs))
    hidden = layers.Dense(8, activation="relu", name="hidden")(x)
    model = keras.Model(inputs, layers.Dense(2, name="head")(hidden))
    graph = tfprune.graph.build(model, unknown="freeze")
    assert graph["hidden"].prunable and not graph["before"].prunable
    assert all(group.size for group in graph)
    small, result = tfprune.prune(model, "l1", rate=0.5, round_to=1, unknown="freeze")
    assert result.widths_after == {"hidden": 4}
    x = _random((3, 5))
    assert outputs(small, x).shape == (3, 2)


def stacked(axis):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 4), name="tokens")
    first, second = layers.Dense(6, name="first")(inputs), layers.Dense(6, name="second")(inputs)
    x = ops.stack([first, second], axis=axis)
    x = ops.reshape(x, (-1, 10, 6)) if axis in (1, 2) else ops.reshape(x, (-1, 5, 12))
    return keras.Model(inputs, layers.Dense(2, name="head")(layers.Dense(8, name="hidden")(x)))


@pytest.mark.parametrize("axis", [1, 2])
def test_stack_along_an_axis_before_the_last_couples_and_passes_the_channels(axis, tmp_path):
    model = stacked(axis)
    group = tfprune.graph.build(model)["first"]
    assert set(group.producers) == {"first", "second"} and group.consumers == ("hidden",)
    assert_dead_channels_leave_no_trace(model, "first", [0, 3], _random((2, 5, 4)), tmp_path)


def test_stack_along_a_new_last_axis_pins_the_channels():
    graph = tfprune.graph.build(stacked(-1))
    assert not graph["first"].prunable and "stacks its inputs along a new last axis" in graph["first"].reason
    assert graph["hidden"].prunable


def tiled(repeats):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((1, 4), name="token")
    x = ops.tile(layers.Dense(6, name="producer")(inputs), repeats)
    return keras.Model(inputs, layers.Dense(2, name="head")(layers.Dense(8, name="hidden")(x)))


def test_tile_over_other_axes_passes_the_channels(tmp_path):
    model = tiled((1, 3, 1))
    assert tfprune.graph.build(model)["producer"].consumers == ("hidden",)
    assert_dead_channels_leave_no_trace(model, "producer", [1, 2], _random((2, 1, 4)), tmp_path)


def test_tile_over_the_channel_axis_pins_the_channels():
    graph = tfprune.graph.build(tiled((1, 1, 2)))
    assert not graph["producer"].prunable and "repeats the channel axis" in graph["producer"].reason
    assert graph["hidden"].prunable


def test_top_k_pins_the_channels_it_picks_from_and_what_reads_its_outputs_prunes():
    # D-FINE picks its queries with `top_k` over class scores: which channel lands where
    # depends on the data, so the scores' channels stay; the layers after it still prune.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 4), name="tokens")
    scores = layers.Dense(6, name="scores")(inputs)
    values, indices = ops.top_k(scores, 3)
    x = ops.concatenate([values, ops.cast(indices, "float32")], axis=-1)
    hidden = layers.Dense(8, activation="relu", name="hidden")(x)
    model = keras.Model(inputs, layers.Dense(2, name="head")(hidden))
    graph = tfprune.graph.build(model)
    assert not graph["scores"].prunable and "picks entries of the channel axis by value" in graph["scores"].reason
    assert graph["hidden"].prunable
    small, result = tfprune.prune(model, "l1", rate=0.5, round_to=1)
    assert result.widths_after == {"hidden": 4}
    x = _random((2, 5, 4))
    assert outputs(small, x).shape == (2, 5, 2)


def test_map_over_the_batch_pins_the_channels_of_its_function():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 4), name="tokens")
    x = layers.Dense(6, name="producer")(inputs)

    def first_rows(row):
        return row[:2]

    x = ops.map(first_rows, x)
    model = keras.Model(inputs, layers.Dense(2, name="head")(layers.Dense(8, name="hidden")(x)))
    graph = tfprune.graph.build(model)
    assert not graph["producer"].prunable and "maps first_rows over the batch" in graph["producer"].reason
    assert graph["hidden"].prunable


@keras.saving.register_keras_serializable(package="tfprune_tests")
class _LearnableAffine(layers.Layer):
    """Like keras-hub's HGNetV2 `LearnableAffineBlock`: `scale * x + bias` with one number each."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(), initializer=keras.initializers.Constant(1.5), name="scale")
        self.bias = self.add_weight(shape=(), initializer=keras.initializers.Constant(0.0), name="bias")

    def call(self, x):
        return self.scale * x + self.bias


def test_a_layer_whose_weights_are_single_numbers_is_pruned_through_on_an_inferred_rule(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 4), name="tokens")
    x = _LearnableAffine(name="affine")(layers.Dense(6, name="producer")(inputs))
    model = keras.Model(inputs, layers.Dense(2, name="head")(x))
    graph = tfprune.graph.build(model)
    assert graph["producer"].prunable and "affine" in graph.inferred
    assert_dead_channels_leave_no_trace(model, "producer", [0, 4], _random((2, 5, 4)), tmp_path)


@keras.saving.register_keras_serializable(package="tfprune_tests")
class _PerChannelScale(layers.Layer):
    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return self.scale * x


def test_a_layer_with_a_weight_per_channel_is_still_not_inferred():
    inputs = keras.Input((5, 4), name="tokens")
    x = _PerChannelScale(name="scale")(layers.Dense(6, name="producer")(inputs))
    model = keras.Model(inputs, layers.Dense(2, name="head")(x))
    graph = tfprune.graph.build(model, unknown="freeze")
    assert not graph["producer"].prunable and "it holds weights" in graph["producer"].reason


class _LibraryBlock(layers.Layer):
    """A weighted block of a library (its module set as keras-hub's below), which tfprune cannot see into."""

    def build(self, input_shape):
        self.mix = self.add_weight(shape=(input_shape[-1], input_shape[-1]), name="mix")

    def call(self, x):
        return ops.matmul(x, self.mix)


def test_a_library_layer_is_frozen_without_suggesting_a_handler_for_it():
    # Suggesting `Preserve()` for a keras-hub block that mixes channels would invite a wrong rule.
    inputs = keras.Input((4,), name="features")
    x = layers.Dense(8, name="hidden")(inputs)
    model = keras.Model(inputs, layers.Dense(2, name="head")(_LibraryBlock(name="block")(x)))
    messages = {}
    for module in ("keras_hub.src.models.example", __name__):
        _LibraryBlock.__module__ = module
        with pytest.warns(UserWarning, match="tfprune cannot see inside layer 'block'") as caught:
            tfprune.graph.build(model)
        messages[module] = " ".join(str(warning.message) for warning in caught)
    assert "register_handler" not in messages["keras_hub.src.models.example"]
    assert "register_handler(_LibraryBlock, tfprune.graph.Preserve())" in messages[__name__]


def test_an_xlnet_encoder_block_prunes_its_feed_forward_units(tmp_path):
    # XLNet's encoder block holds per-head attention biases of its own, so it is not
    # inlined: its handler declares the units between its feed-forward Dense layers.
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    model = keras_hub.models.XLNetBackbone(vocabulary_size=30, num_layers=2, num_heads=2, hidden_dim=16,
                                           intermediate_dim=32)  # fmt: skip
    flat = tfprune.graph.flatten(model)
    graph = tfprune.graph.build(flat)
    units = [group for group in graph if group.name.endswith("feedforward_intermediate_dense")]
    assert len(units) == 2 and all(group.prunable and group.size == 32 for group in units)
    rng = np.random.default_rng(0)
    x = {"token_ids": rng.integers(1, 30, (2, 6)).astype("int32"), "padding_mask": np.ones((2, 6), "int32"),
         "segment_ids": np.zeros((2, 6), "int32")}  # fmt: skip
    small = assert_dead_channels_leave_no_trace(flat, units[0].name, [3, 17, 30], x, tmp_path)
    assert small.count_params() < flat.count_params()
    pruned, result = tfprune.prune(model, "l1", rate=0.5)
    assert sorted(result.widths_after.values()) == [16, 16]
    pruned.save(tmp_path / "xlnet.keras")
    np.testing.assert_allclose(outputs(keras.models.load_model(tmp_path / "xlnet.keras"), x), outputs(pruned, x),
                               atol=1e-6, rtol=0)  # fmt: skip


@pytest.mark.parametrize("gated", [False, True])
def test_t5_transformer_layers_prune_their_feed_forward_units(gated, tmp_path):
    # T5's attention layers return None for their cache, so its blocks stay whole: their
    # handler declares the feed-forward units (two producers, multiplied, when gated) and the heads.
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(0)
    model = keras_hub.models.T5Backbone(vocabulary_size=30, num_layers=2, num_heads=2, hidden_dim=16,
                                        intermediate_dim=32, key_value_dim=8, use_gated_activation=gated,
                                        activation="gelu")  # fmt: skip
    flat = tfprune.graph.flatten(model)
    graph = tfprune.graph.build(flat)
    units = [group for group in graph if group.name.endswith("input_projector")]
    assert len(units) == 4 and all(group.prunable and group.size == 32 for group in units)
    paths = {path.split("/", 1)[1] for member in units[0].members for path, _ in member.weights}
    assert paths == {"input_projector/kernel", "output_projector/kernel"} | ({"gate_projector/kernel"} if gated else set())
    rng = np.random.default_rng(0)
    x = {"encoder_token_ids": rng.integers(1, 30, (2, 6)).astype("int32"),
         "encoder_padding_mask": np.ones((2, 6), "int32"),
         "decoder_token_ids": rng.integers(1, 30, (2, 5)).astype("int32"),
         "decoder_padding_mask": np.ones((2, 5), "int32")}  # fmt: skip
    assert_dead_channels_leave_no_trace(flat, units[-1].name, [0, 9, 31], x, tmp_path)
    pruned, result = tfprune.prune(model, "l1", rate=0.5)
    # The units, and one of the 2 heads of each stack (tests/test_keras_hub_attention.py).
    assert sorted(result.widths_after.values()) == [1, 1] + [16] * 4
    pruned.save(tmp_path / "t5.keras")
    for got, want in zip(_all_outputs(keras.models.load_model(tmp_path / "t5.keras"), x), _all_outputs(pruned, x)):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
