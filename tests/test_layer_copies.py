"""Copying layers through their configs: tied weights, nested models, configs that do not load back."""

import keras
import numpy as np
import pytest
from keras import layers, ops

import tfprune
from tfprune import surgery


def outputs(model, inputs):
    return [ops.convert_to_numpy(value) for value in keras.tree.flatten(model(inputs, training=False))]


def assert_same(got, want, atol=1e-6):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, atol=atol, rtol=0)


def reloaded(model, tmp_path, name="model.keras"):
    model.save(tmp_path / name)
    return keras.models.load_model(tmp_path / name)


# ---------------------------------------------------------------- tfprune.layers.Weight


def test_weight_layer_outputs_its_weight_and_round_trips(tmp_path):
    inputs = keras.Input((3,))
    layer = tfprune.layers.Weight((3,), initializer="ones", name="bias")
    model = keras.Model(inputs, inputs + layer(inputs))
    layer.weight.assign(np.array([1.0, 2.0, 3.0], "float32"))
    x = np.zeros((2, 3), "float32")
    np.testing.assert_allclose(ops.convert_to_numpy(model(x)), [[1, 2, 3], [1, 2, 3]])
    assert_same(outputs(reloaded(model, tmp_path), x), outputs(model, x))
    with pytest.raises(ValueError, match="Received: shape=3"):
        tfprune.layers.Weight(3)


# ---------------------------------------------------------------- a block holding a Sequential


class NoisyMLP(layers.Layer):
    """ViTDet's MLP: a block holding a Sequential (made from a tracked list); kept whole (it branches on `training`)."""

    def __init__(self, units=6, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.net = [layers.Dense(units, name="up"), layers.Dense(4, name="down")]
        self.net = keras.Sequential(self.net)

    def call(self, x, training=None):
        if training:
            x = x + keras.random.normal(ops.shape(x), stddev=0.1)
        return self.net(x)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_a_block_kept_whole_copies_its_sequential_once_and_shares_no_weight():
    inputs = keras.Input((4,))
    block = NoisyMLP(name="mlp")
    model = keras.Model(inputs, layers.Dense(3, name="head")(block(inputs)))
    flat = tfprune.graph.flatten(model)
    assert flat.count_params() == model.count_params()
    assert not {id(weight) for weight in model.weights} & {id(weight) for weight in flat.weights}
    x = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    assert_same(outputs(flat, x), outputs(model, x))


# ---------------------------------------------------------------- prune never adds parameters


def test_prune_refuses_a_result_with_more_parameters_than_its_input(monkeypatch):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layers.Dense(2)(layers.Dense(16, name="hidden")(inputs)))
    set_widths = surgery.set_widths

    def grown(*args, **kwargs):  # a surgery that would untie a weight: one layer more
        small = set_widths(*args, **kwargs)
        return keras.Model(small.inputs, layers.Dense(64, name="extra")(small.outputs[0]))

    monkeypatch.setattr(surgery, "set_widths", grown)
    with pytest.raises(ValueError, match="more than the 114 of the input model"):
        tfprune.prune(model, "l1", rate=0.5, round_to=1)


# ---------------------------------------------------------------- keras-hub


@pytest.fixture(scope="module")
def keras_hub():
    return pytest.importorskip("keras_hub", reason="install the `keras-hub` extra")


def masked_lm(keras_hub):
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=40, num_layers=1, num_heads=2, hidden_dim=16,
                                             intermediate_dim=32, max_sequence_length=12)  # fmt: skip
    return keras_hub.models.BertMaskedLM(backbone=backbone, preprocessor=None)


def masked_lm_inputs():
    rng = np.random.default_rng(0)
    return {
        "token_ids": rng.integers(1, 40, (2, 12)).astype("int32"),
        "segment_ids": np.zeros((2, 12), "int32"),
        "padding_mask": np.ones((2, 12), "int32"),
        "mask_positions": np.array([[1, 3, 5], [0, 2, 4]], "int32"),
    }


def test_a_masked_lm_head_keeps_the_token_embedding_it_shares_with_the_backbone(keras_hub):
    model = masked_lm(keras_hub)
    flat = tfprune.graph.flatten(model)
    embeddings = [layer for layer in flat.layers if isinstance(layer, keras.layers.ReversibleEmbedding)]
    assert len(embeddings) == 1 and len(embeddings[0]._inbound_nodes) == 2  # forwards and in reverse
    # The backbone's unused pooler is left out; nothing is copied twice.
    assert flat.count_params() == model.count_params() - model.backbone.get_layer("pooled_dense").count_params()
    assert_same(outputs(flat, masked_lm_inputs()), outputs(model, masked_lm_inputs()), atol=1e-5)


@pytest.mark.parametrize("targets", ["all", "hidden"])
def test_a_pruned_masked_lm_shrinks_slices_its_tied_table_once_and_reloads(keras_hub, targets, tmp_path):
    model = masked_lm(keras_hub)
    small, result = tfprune.prune(model, "l1", rate=0.5, round_to=1, targets=targets, verbose=0)
    assert small.count_params() < model.count_params()
    embeddings = [layer for layer in small.layers if isinstance(layer, keras.layers.ReversibleEmbedding)]
    assert len(embeddings) == 1
    if targets == "hidden":
        assert tuple(embeddings[0].embeddings.shape) == (40, 8)
    x = masked_lm_inputs()
    assert outputs(small, x)[0].shape == (2, 3, 40)
    again = reloaded(small, tmp_path)
    assert again.count_params() == small.count_params()
    assert_same(outputs(again, x), outputs(small, x))


# ---------------------------------------------------------------- the pre-return reload check


class NoName(layers.Layer):
    """SegFormer's attention and Mix-FFN: the constructor takes no `name`, the config records no argument."""

    def __init__(self, units):
        super().__init__()
        self.dense = layers.Dense(units, name="dense")

    def call(self, x, training=None):
        if training:  # kept whole by flatten
            x = x + keras.random.normal(ops.shape(x), stddev=0.1)
        return self.dense(x)


@keras.saving.register_keras_serializable(package="tfprune_tests")
class Owner(layers.Layer):
    """A block whose config loads back: it re-creates its NoName itself."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.inner = NoName(units)

    def call(self, x):
        return self.inner(x)

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def test_prune_refuses_an_unchanged_copy_holding_a_block_that_would_not_reload(tmp_path):
    inputs = keras.Input((4,))
    x = layers.Dense(4, name="second")(layers.Dense(8, activation="relu", name="first")(inputs))
    model = keras.Model(inputs, layers.Dense(2, name="head")(Owner(8, name="owner")(x)))
    assert_same(outputs(reloaded(model, tmp_path), np.ones((1, 4))), outputs(model, np.ones((1, 4))))
    # A rate that removes nothing: the copy is unchanged, but inlining kept the NoName whole.
    with pytest.raises(ValueError, match=r"layer 'owner_no_name' \(NoName\) could not be inlined \(.*\), and on its own"):
        tfprune.prune(model, "l1", rate=0.1, round_to=1, verbose=0)


@keras.saving.register_keras_serializable(package="tfprune_tests")
class ForgetfulDense(layers.Dense):
    """Rebuilds from its config with the right shapes, but its weights do not load back."""

    def load_own_variables(self, store):
        pass


def test_prune_refuses_a_model_whose_weights_do_not_load_back(monkeypatch):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layers.Dense(2, name="head")(layers.Dense(16, name="hidden")(inputs)))
    set_widths = surgery.set_widths

    def forgetful(*args, **kwargs):
        small = set_widths(*args, **kwargs)

        def replace(layer):
            if layer.name != "head":
                return None
            copy = ForgetfulDense.from_config(layer.get_config())
            copy.build((None, layer.kernel.shape[0]))
            copy.set_weights([np.ones(w.shape, "float32") for w in layer.get_weights()])
            return copy

        return tfprune._utils.clone_graph(small, replace)

    monkeypatch.setattr(surgery, "set_widths", forgetful)
    with pytest.raises(ValueError, match="saved to `.keras` and loaded back, it computes other outputs"):
        tfprune.prune(model, "l1", rate=0.5, round_to=1, verbose=0)


# ---------------------------------------------------------------- a -1 beside the traced batch size


class TokenMixer(layers.Layer):
    """SegFormer's attention and Mix-FFN: `ops.reshape(x, (batch, -1, width))` with the batch from `ops.shape`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.expand = layers.Dense(12, name="expand")
        self.reduce = layers.Conv2D(12, 2, strides=2, name="reduce")
        self.up = layers.Dense(8, name="up")
        self.depthwise = layers.DepthwiseConv2D(3, padding="same", name="depthwise")
        self.project = layers.Dense(4, name="project")

    def call(self, x):
        batch, length, _ = ops.shape(x)
        side = int(length**0.5)
        x = self.expand(x)
        keys = self.reduce(ops.reshape(x, (batch, side, side, 12)))
        keys = ops.reshape(keys, (batch, -1, 12))  # the -1 is worked out: 4 tokens
        weights = ops.softmax(ops.matmul(x, ops.transpose(keys, (0, 2, 1))), axis=-1)
        x = self.up(ops.matmul(weights, keys))
        x = self.depthwise(ops.reshape(x, (batch, side, side, 8)))
        return self.project(ops.reshape(x, (batch, -1, 8)))  # 16 tokens


class FoldsTokensThenMixes(layers.Layer):
    """Folds 4 tokens into the batch, then reshapes to `(batch, -1, width)`: worked out from the folded
    tensor the -1 would be 4 tokens instead of 16, and the softmax over them computes other values."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.Dense(8, name="dense")

    def call(self, x):
        batch = ops.shape(x)[0]
        folded = self.dense(ops.reshape(x, (-1, 4, 8)))
        tokens = ops.softmax(ops.reshape(folded, (batch, -1, 8)), axis=1)
        return ops.reshape(tokens, (batch, 16, 8))


def test_a_minus_one_beside_the_batch_size_is_worked_out_when_the_trace_computes_the_same(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 4))
    model = keras.Model(inputs, layers.Dense(3, name="head")(TokenMixer(name="mixer")(inputs)))
    flat = tfprune.graph.flatten(model)
    assert not any(tfprune.graph.is_composite(layer) for layer in flat.layers)
    x = np.random.default_rng(0).normal(size=(3, 16, 4)).astype("float32")
    assert_same(outputs(flat, x), outputs(model, x), atol=1e-5)
    small, result = tfprune.prune(model, "l1", rate=0.5, round_to=1, verbose=0)
    assert result.widths_after["mixer_up"] == 4
    assert outputs(small, x)[0].shape == (3, 16, 3)
    assert_same(outputs(reloaded(small, tmp_path), x), outputs(small, x))


def test_a_minus_one_beside_the_batch_size_of_folded_tokens_counts_the_rows_each_sample_fills():
    # Taken for the batch, the folded tensor's first axis would give -1 = 4 and other
    # values; each sample fills 4 of its rows, so the -1 is 16 (`tfprune._batch_axis`).
    inputs = keras.Input((16, 8))
    model = keras.Model(inputs, FoldsTokensThenMixes(name="fold")(inputs))
    flat = tfprune.graph.flatten(model)
    assert not any(tfprune.graph.is_composite(layer) for layer in flat.layers)
    for batch in (1, 2):
        x = np.random.default_rng(batch).normal(size=(batch, 16, 8)).astype("float32")
        assert_same(outputs(flat, x), outputs(model, x), atol=1e-6)


def test_a_segformer_prunes_inside_its_attention_and_mix_ffn_and_reloads(keras_hub, tmp_path):
    keras.utils.set_random_seed(0)
    encoder = keras_hub.models.MiTBackbone(
        layerwise_depths=[1, 1], num_layers=2, layerwise_num_heads=[1, 2], layerwise_sr_ratios=[4, 2],
        max_drop_path_rate=0.0, layerwise_patch_sizes=[7, 3], layerwise_strides=[4, 2], image_shape=(32, 32, 3),
        hidden_dims=[16, 32],
    )  # fmt: skip
    model = keras_hub.models.SegFormerBackbone(image_encoder=encoder, projection_filters=16)
    small, result = tfprune.prune(model, "l1", rate=0.3, verbose=0)
    assert small.count_params() < model.count_params()
    assert not any(type(layer).__name__ in ("SegFormerMultiheadAttention", "MixFFN") for layer in small.layers)
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    assert_same(outputs(reloaded(small, tmp_path), x), outputs(small, x))


# ---------------------------------------------------------------- a get_config that raises


@keras.saving.register_keras_serializable(package="tfprune_tests")
class ScaleNorm(layers.Layer):
    """keras-hub's Gemma `RMSNormalization`: no `get_config`, built by its blocks with `dtype=<DTypePolicy>`,
    so Keras's automatic config raises."""

    def __init__(self, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="zeros")

    def call(self, x):
        variance = ops.mean(ops.square(x), axis=-1, keepdims=True)
        return x * ops.rsqrt(variance + self.epsilon) * (1 + self.scale)


@keras.saving.register_keras_serializable(package="tfprune_tests")
class NormBlock(layers.Layer):
    """Every block names its norm "norm": inlined twice, the copies need names of their own."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.norm = ScaleNorm(epsilon=0.5, dtype=self.dtype_policy, name="norm")
        self.up = layers.Dense(units, activation="relu", name="up")
        self.down = layers.Dense(4, name="down")

    def call(self, x):
        return x + self.down(self.up(self.norm(x)))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def norm_blocks():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 4))
    x = NormBlock(8, name="block_0")(inputs)
    model = keras.Model(inputs, layers.Dense(2, name="head")(NormBlock(8, name="block_1")(x)))
    for layer in model.layers[1:3]:
        layer.norm.scale.assign(np.random.default_rng(0).normal(size=4).astype("float32"))
    return model


def test_a_layer_whose_automatic_config_raises_is_copied_from_its_arguments_and_reloads(tmp_path):
    model = norm_blocks()
    with pytest.raises(NotImplementedError):
        model.get_layer("block_0").norm.get_config()
    flat = tfprune.graph.flatten(model)
    norms = [layer for layer in flat.layers if isinstance(layer, ScaleNorm)]
    assert [layer.name for layer in norms] == ["block_0_norm", "block_1_norm"]
    assert norms[0].epsilon == 0.5 and norms[0].get_config()["epsilon"] == 0.5
    assert not {id(weight) for weight in model.weights} & {id(weight) for weight in flat.weights}
    x = np.random.default_rng(1).normal(size=(2, 5, 4)).astype("float32")
    assert_same(outputs(flat, x), outputs(model, x), atol=1e-5)
    small, _ = tfprune.prune(model, "l1", rate=0.5, round_to=1, verbose=0)
    assert small.get_layer("block_0_up").units == 4
    assert_same(outputs(reloaded(small, tmp_path), x), outputs(small, x))


# ---------------------------------------------------------------- traces checked numerically


class CausalMix(layers.Layer):
    """T5Gemma's decoder mask: `ops.arange(0, length)` with the length from `ops.shape`, None while traced
    (recorded as an empty range, the trace would hold a mask of size 0; recorded as a range read
    from the tensor when the model runs, it holds for any length)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.value = layers.Dense(4, name="value")

    def call(self, x):
        length = ops.shape(x)[1]
        positions = ops.arange(0, length)
        causal = ops.cast(positions[:, None] >= positions[None, :], x.dtype)
        weights = causal / ops.sum(causal, axis=-1, keepdims=True)
        return ops.matmul(weights, self.value(x))


def test_a_range_over_a_length_unknown_until_it_runs_is_traced_for_any_length():
    inputs = keras.Input((None, 4))
    model = keras.Model(inputs, layers.Dense(2, name="head")(CausalMix(name="mix")(inputs)))
    flat = tfprune.graph.flatten(model)
    assert "mix" not in [layer.name for layer in flat.layers]  # inlined: its mask is a SizeRange
    for length in (6, 9):
        x = np.random.default_rng(length).normal(size=(2, length, 4)).astype("float32")
        assert_same(outputs(flat, x), outputs(model, x))


# ---------------------------------------------------------------- the input model's probe


class FailsWhenRun(layers.Layer):
    """Builds a graph, but fails on arrays: a pruned model the check must not return."""

    def call(self, x):
        raise RuntimeError("cannot run")

    def compute_output_shape(self, input_shape):
        return input_shape


def test_prune_runs_the_input_model_on_a_probe_in_its_own_structure(keras_hub, monkeypatch):
    # A keras-hub backbone takes a dict and refuses the list the inlined model takes: were the probe
    # given to it as a list, its failure would excuse the pruned model's.
    model = keras_hub.models.BertBackbone(vocabulary_size=40, num_layers=1, num_heads=2, hidden_dim=16,
                                          intermediate_dim=32, max_sequence_length=12)  # fmt: skip
    set_widths = surgery.set_widths

    def failing(*args, **kwargs):
        small = set_widths(*args, **kwargs)
        first, *rest = small.outputs
        return keras.Model(small.inputs, [FailsWhenRun(name="fails")(first), *rest])

    monkeypatch.setattr(surgery, "set_widths", failing)
    with pytest.raises(ValueError, match="fails on a probe input that the input model runs"):
        tfprune.prune(model, "l1", rate=0.5, round_to=1, verbose=0)


# ---------------------------------------------------------------- sub-layers' own conventions


class SpecOfInputsOnly(layers.Layer):
    """keras-hub's QFormerAttention: takes `training`, but its `compute_output_spec` takes only the inputs."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.Dense(4, name="dense")
        self.dropout = layers.Dropout(0.5, name="dropout")

    def call(self, inputs, training=None):
        return inputs + self.dropout(self.dense(inputs), training=training)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)


class PassesTraining(layers.Layer):
    """keras-hub's QFormerLayer: hands `training` on to its blocks."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.attention = SpecOfInputsOnly(name="attention")
        self.up = layers.Dense(8, activation="relu", name="up")
        self.down = layers.Dense(4, name="down")

    def call(self, inputs, training=None):
        x = self.attention(inputs, training=training)
        return x + self.down(self.up(x))

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs.shape, dtype=self.compute_dtype)


def test_a_block_whose_compute_output_spec_takes_only_its_inputs_is_inlined(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3, 4))
    model = keras.Model(inputs, layers.Dense(2, name="head")(PassesTraining(name="block")(inputs)))
    flat = tfprune.graph.flatten(model)
    assert not any(tfprune.graph.is_composite(layer) for layer in flat.layers)
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype("float32")
    assert_same(outputs(flat, x), outputs(model, x), atol=1e-5)
    small, result = tfprune.prune(model, "l1", rate=0.5, round_to=1, verbose=0)
    assert result.widths_after["block_up"] == 4
    assert_same(outputs(reloaded(small, tmp_path), x), outputs(small, x))


@keras.saving.register_keras_serializable(package="tfprune_tests")
class LazyTable(layers.Layer):
    """keras-hub's DeBERTa RelativeEmbedding: a weight made in `__init__`, no `build`, and a
    LayerNormalization first built in `call`."""

    def __init__(self, rows=6, width=4, **kwargs):
        super().__init__(**kwargs)
        self.rows, self.width = rows, width
        self.table = self.add_weight(shape=(rows, width), initializer="glorot_uniform", name="table")
        self.norm = layers.LayerNormalization(name="norm")

    def call(self, inputs):
        table = self.norm(ops.expand_dims(ops.convert_to_tensor(self.table), 0))
        return ops.zeros_like(inputs[:, :1, :1]) + table

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.rows, self.width)

    def get_config(self):
        return {**super().get_config(), "rows": self.rows, "width": self.width}


def test_a_layer_building_its_sublayers_in_call_is_copied_and_reloads(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 4))
    x = layers.Dense(8, activation="relu", name="up")(inputs)
    x = layers.Dense(4, name="down")(x) + LazyTable(name="table")(inputs)
    model = keras.Model(inputs, layers.Dense(2, name="head")(x))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", tfprune.graph.SharedLayerWarning)
        flat = tfprune.graph.flatten(keras.Sequential([keras.Input((6, 4)), model]))
        small, _ = tfprune.prune(model, "l1", rate=0.5, round_to=1, verbose=0)
    assert not {id(weight) for weight in model.weights} & {id(weight) for weight in flat.weights}
    assert len(small.get_layer("table").weights) == 3
    x = np.random.default_rng(0).normal(size=(2, 6, 4)).astype("float32")
    assert_same(outputs(reloaded(small, tmp_path), x), outputs(small, x))


# ---------------------------------------------------------------- Swin


def test_take_and_unstack_over_another_axis_keep_the_channels():
    inputs = keras.Input((3, 4))
    x = layers.Dense(8, name="up")(inputs)
    first, second, third = ops.unstack(x, axis=1)
    rows = ops.take(x, np.array([2, 0]), axis=1)
    model = keras.Model(inputs, layers.Dense(2, name="head")(first + second + third + ops.sum(rows, axis=1)))
    assert tfprune.graph.build(model)["up"].prunable
    inputs = keras.Input((3, 4))
    x = layers.Dense(8, name="up")(inputs)
    model = keras.Model(inputs, layers.Dense(2, name="head")(ops.take(x, np.array([2, 0]), axis=-1)))
    assert "gathers over the channel axis" in tfprune.graph.build(model)["up"].reason
    first, second = ops.unstack(x, axis=-1)[:2]
    model = keras.Model(inputs, layers.Dense(2, name="head")(ops.expand_dims(first + second, -1)))
    assert "unstacks the channel axis" in tfprune.graph.build(model)["up"].reason


def test_a_swin_transformer_prunes_inside_its_windowed_blocks_and_reloads(keras_hub, tmp_path):
    keras.utils.set_random_seed(0)
    model = keras_hub.models.SwinTransformerBackbone(
        image_shape=(32, 32, 3), patch_size=4, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4,
        mlp_ratio=2.0, drop_path=0.0,
    )  # fmt: skip
    flat = tfprune.graph.flatten(model)
    assert not any(tfprune.graph.is_composite(layer) for layer in flat.layers)  # WindowAttention too
    x = np.random.default_rng(0).uniform(size=(2, 32, 32, 3)).astype("float32")
    assert_same(outputs(flat, x), outputs(model, x), atol=1e-5)
    small, result = tfprune.prune(model, "l1", rate=0.5, round_to=1, verbose=0)
    assert small.count_params() < model.count_params()
    assert_same(outputs(reloaded(small, tmp_path), x), outputs(small, x))


class WithEmptyCache(layers.Layer):
    """EdRec's decoder blocks: kept whole (it branches on `training`), and one output is empty."""

    def call(self, x, training=None):
        if training:
            x = x + keras.random.normal(ops.shape(x), stddev=0.1)
        return x, x[..., :0]

    def compute_output_shape(self, input_shape):
        return input_shape, (*input_shape[:-1], 0)


def test_a_frozen_layer_with_an_empty_output_gives_it_no_channel():
    inputs = keras.Input((4,))
    x, _ = WithEmptyCache(name="block")(layers.Dense(6, name="up")(inputs))
    model = keras.Model(inputs, layers.Dense(2, name="head")(x))
    graph = tfprune.graph.build(model, unknown="freeze")
    assert not graph["up"].prunable
