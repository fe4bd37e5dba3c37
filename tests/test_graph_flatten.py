"""`tfprune.graph.flatten`: nested models, composite layers and Lambda layers inlined, nothing shared."""

import re
import warnings

import keras
import numpy as np
import pytest
from keras import layers, ops

import tfprune
from tfprune import _utils


class ConvBlock(layers.Layer):
    """A keras-hub-style block: sub-layers, no weights of its own, a residual sum in `call`."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.expand = layers.Conv2D(filters * 2, 1, name="conv")  # the same inner name in every block
        self.norm = layers.BatchNormalization(name="bn")
        self.project = layers.Conv2D(filters, 3, padding="same", name="project")

    def call(self, inputs, training=None):
        x = ops.relu(self.norm(self.expand(inputs), training=training))
        return ops.add(inputs, self.project(x))

    # No get_config: like some keras-hub blocks, this one cannot be re-created from its config.


class Doubler(layers.Layer):
    def call(self, x):
        return ops.add(x, x)


class NoisyInTraining(layers.Layer):
    """Branches on `training` in Python: a trace would keep one branch only."""

    def call(self, x, training=None):
        if training:
            return x + keras.random.normal(ops.shape(x), stddev=0.1)
        return x


class Scaled(layers.Layer):
    """A weight of its own, and a config that does not round-trip."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return x * self.scale

    def get_config(self):
        return super().get_config()  # without `units`, which the constructor requires


class DerivedKeys(layers.Layer):
    """A weight of its own, and a config with a derived key its constructor refuses."""

    def __init__(self, offset, **kwargs):
        super().__init__(**kwargs)
        self.offset = offset
        self.doubled = 2 * offset

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="scale")

    def call(self, x):
        return x * self.scale + self.offset

    def get_config(self):
        return {**super().get_config(), "offset": self.offset, "doubled": self.doubled}


def block_model():
    inputs = keras.Input((8, 8, 3), name="pixels")
    x = layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = ConvBlock(8, name="block1")(x)
    x = ConvBlock(8, name="block2")(x)
    x = Doubler(name="double")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, layers.Dense(4, name="head")(x), name="blocks")


def sample(shape=(2, 8, 8, 3)):
    return np.random.default_rng(0).normal(size=shape).astype("float32")


def randomized(model):
    rng = np.random.default_rng(1)
    for weight in model.weights:
        weight.assign(rng.normal(0.0, 0.3, weight.shape).astype("float32"))
    return model


def test_composite_blocks_are_inlined_with_the_same_outputs_and_prefixed_names():
    model = randomized(block_model())
    flat = tfprune.graph.flatten(model)
    names = [layer.name for layer in flat.layers]
    assert {"block1_conv", "block2_conv", "block1_project", "block2_bn"} <= set(names)
    assert not any(isinstance(layer, (ConvBlock, Doubler)) for layer in flat.layers)
    assert [tensor._keras_history.operation.name for tensor in flat.inputs] == ["pixels"]
    x = sample()
    np.testing.assert_allclose(ops.convert_to_numpy(flat(x)), ops.convert_to_numpy(model(x)), atol=1e-5)


def test_inlined_blocks_own_their_weights():
    model = randomized(block_model())
    calls = len(model.get_layer("block1").expand._inbound_nodes)
    flat = tfprune.graph.flatten(model)
    assert not {id(weight) for weight in model.weights} & {id(weight) for weight in flat.weights}
    flat.get_layer("block1_conv").kernel.assign(ops.zeros((1, 1, 8, 16)))
    block = model.get_layer("block1")
    assert np.abs(ops.convert_to_numpy(block.expand.kernel)).sum() > 0
    assert len(block.expand._inbound_nodes) == calls  # the user's layers got no new call


def test_prune_reaches_inside_composite_blocks_and_the_result_reloads(tmp_path):
    model = randomized(block_model())
    small, result = tfprune.prune(model, "l1", rate=0.5, round_to=1)
    assert result.widths_after["block1_conv"] == 8 and result.widths_before["block1_conv"] == 16
    small.save(tmp_path / "small.keras")  # plain layers and keras.ops only: safe mode loads it
    reloaded = keras.models.load_model(tmp_path / "small.keras")
    x = sample()
    np.testing.assert_allclose(ops.convert_to_numpy(reloaded(x)), ops.convert_to_numpy(small(x)), atol=1e-6)


def test_a_call_that_branches_on_training_stays_one_unit():
    inputs = keras.Input((4,))
    x = NoisyInTraining(name="noisy")(layers.Dense(6, name="dense")(inputs))
    flat = tfprune.graph.flatten(keras.Model(inputs, layers.Dense(2, name="head")(x)))
    assert isinstance(flat.get_layer("noisy"), NoisyInTraining)


def test_a_layer_that_cannot_be_copied_is_shared_with_one_warning():
    inputs = keras.Input((4,))
    scaled = Scaled(3, name="scaled")
    model = keras.Model(inputs, layers.Dense(2, name="head")(scaled(layers.Dense(6, name="dense")(inputs))))
    with pytest.warns(_utils.SharedLayerWarning, match=r"layer 'scaled' \(Scaled\).*shares this layer") as caught:
        flat = tfprune.graph.flatten(model)
    assert len([w for w in caught if issubclass(w.category, _utils.SharedLayerWarning)]) == 1
    assert flat.get_layer("scaled") is scaled
    assert flat.get_layer("dense") is not model.get_layer("dense")


def test_copy_layer_checks_what_it_copies():
    dense = layers.Dense(3, name="dense")
    dense.build((None, 4))
    copy = _utils.copy_layer(dense)
    assert copy is not dense and copy.name == "dense"
    np.testing.assert_array_equal(ops.convert_to_numpy(copy.kernel), ops.convert_to_numpy(dense.kernel))
    scaled = Scaled(3)
    scaled.build((None, 4))
    assert _utils.copy_layer(scaled) is None  # its config does not round-trip
    lam = layers.Lambda(lambda t, k: t * k, arguments={"k": 3.0}, name="times")
    lam_copy = _utils.copy_layer(lam)
    assert lam_copy.function is lam.function and lam_copy.arguments == {"k": 3.0} and lam_copy.name == "times"


def test_a_config_with_keys_the_constructor_refuses_is_repaired_in_the_copy(tmp_path):
    inputs = keras.Input((4,), name="x")
    derived = DerivedKeys(0.5, name="derived")
    model = keras.Model(inputs, layers.Dense(2, name="head")(derived(layers.Dense(3, name="dense")(inputs))))
    model.get_layer("derived").scale.assign([1.0, -2.0, 3.0])
    with pytest.raises(TypeError, match="doubled"):
        DerivedKeys.from_config(derived.get_config())  # the layer's own defect
    with pytest.warns(_utils.ConfigRepairWarning, match=r"DerivedKeys.get_config\(\) returns 'doubled'"):
        copy = tfprune.graph.flatten(keras.Model(inputs, model(inputs)))
    repaired = copy.get_layer("derived")
    assert repaired is not derived and "doubled" not in repaired.get_config()
    assert "doubled" in derived.get_config()  # the user's layer is untouched
    x = sample((3, 4))
    np.testing.assert_allclose(ops.convert_to_numpy(copy(x)), ops.convert_to_numpy(model(x)), atol=1e-6)
    copy.save(tmp_path / "repaired.keras")
    loaded = keras.models.load_model(tmp_path / "repaired.keras", custom_objects={"DerivedKeys": DerivedKeys})
    np.testing.assert_allclose(ops.convert_to_numpy(loaded(x)), ops.convert_to_numpy(model(x)), atol=1e-6)
    # A copy of the copy keeps the repair, without warning again.
    with warnings.catch_warnings():
        warnings.simplefilter("error", _utils.ConfigRepairWarning)
        again = _utils.copy_layer(repaired)
    assert "doubled" not in again.get_config()


def test_a_repaired_copy_that_computes_something_else_is_not_used():
    class Forgetful(DerivedKeys):
        def get_config(self):  # also forgets `offset`: the copy would add 0.0
            config = super().get_config()
            config["offset"] = 0.0
            return config

    inputs = keras.Input((4,), name="x")
    forgetful = Forgetful(0.5, name="forgetful")
    keras.Model(inputs, forgetful(inputs))
    assert _utils.copy_layer(forgetful) is None


def test_a_weightless_layer_built_with_an_unserializable_argument_is_copied():
    identity = layers.Identity(name="identity", dtype=keras.DTypePolicy("float32"))
    with pytest.raises(NotImplementedError):
        identity.get_config()  # how keras-hub's HGNetV2 builds its Identity layers
    copy = _utils.copy_layer(identity)
    assert isinstance(copy, layers.Identity) and copy is not identity and copy.name == "identity"
    assert copy.get_config()["name"] == "identity"


def lambda_model():
    inputs = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(8, 3, name="conv")(inputs)
    x = layers.Lambda(lambda t: ops.relu(t) + t, name="relu_plus")(x)
    x = layers.Conv2D(8, 3, name="conv2")(x)
    x = layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, layers.Dense(3, name="logits")(x))


def test_a_lambda_model_is_sparsified_magnitude_pruned_and_pruned(tmp_path):
    model = randomized(lambda_model())
    x = sample((4, 8, 8, 1))
    expected = ops.convert_to_numpy(model(x))
    sparse = tfprune.sparsify(model)
    np.testing.assert_allclose(ops.convert_to_numpy(sparse(x)), expected, atol=1e-5)
    sparse.save(tmp_path / "sparse.keras")  # the lambda became keras.ops: it reloads in safe mode
    keras.models.load_model(tmp_path / "sparse.keras")
    masked = tfprune.prune_low_magnitude(model, tfprune.ConstantSparsity(0.5, frequency=1))
    tfprune.magnitude.update_pruning_step(masked)
    assert tfprune.magnitude.mask_sparsity(masked) == pytest.approx(0.5, abs=0.01)
    small, result = tfprune.prune(model, "l1", rate=0.5, round_to=1)
    assert result.widths_after["conv"] == 4  # the channels pass through the traced lambda


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="export converts in a TensorFlow process")
def test_a_magnitude_pruned_lambda_model_exports(tmp_path):
    model = randomized(lambda_model())
    x = sample((4, 8, 8, 1))
    masked = tfprune.prune_low_magnitude(model, tfprune.ConstantSparsity(0.5, frequency=1))
    tfprune.magnitude.update_pruning_step(masked)
    report = tfprune.export.to_tflite(tfprune.strip(masked), tmp_path / "masked.tflite", sample_inputs=x, verbose=0)
    assert report.max_abs_error < 1e-4


def test_a_lambda_multiplying_by_a_constant_is_inlined_as_a_dense_product():
    # Keras marks `x * 2.0` traced op by op as a sparse tensor, where the Lambda's output is dense:
    # the product is recorded as a DenseMultiply.
    inputs = keras.Input((6,))
    x = layers.Lambda(lambda t: t * 2.0, name="double")(layers.Dense(6, name="dense")(inputs))
    model = randomized(keras.Model(inputs, layers.Dense(2, name="head")(x)))
    flat = tfprune.graph.flatten(model)
    assert not any(isinstance(layer, layers.Lambda) for layer in flat.layers)
    assert any(type(node.operation).__name__ == "DenseMultiply" for node in tfprune.graph._ordered_nodes(flat))
    np.testing.assert_allclose(ops.convert_to_numpy(flat(sample((3, 6)))), ops.convert_to_numpy(model(sample((3, 6)))))
    masked = tfprune.prune_low_magnitude(model)
    x = sample((3, 6))
    np.testing.assert_allclose(ops.convert_to_numpy(masked(x)), ops.convert_to_numpy(model(x)), atol=1e-5)


def test_nested_models_keep_the_outer_input_names():
    backbone = keras.Sequential([keras.Input((5,)), layers.Dense(6, name="inner")], name="backbone")
    inputs = keras.Input((5,), name="features")
    model = keras.Model(inputs, layers.Dense(2, name="head")(backbone(inputs)))
    flat = tfprune.graph.flatten(model)
    assert [layer.name for layer in flat.layers] == ["features", "inner", "head"]


def test_sparsify_warns_when_most_weights_sit_in_layers_it_cannot_convert():
    inputs = keras.Input((64,))
    x = layers.Embedding(1000, 64, name="table")(ops.cast(inputs, "int32"))
    model = keras.Model(inputs, layers.Dense(2, name="head")(layers.Flatten()(x)))
    with pytest.warns(UserWarning, match=r"`tfprune.sparsify` converted 1 layer.*'table' \(Embedding"):
        tfprune.sparsify(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        tfprune.prune_low_magnitude(model)  # it wraps embeddings: no warning


class Mlp(layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense_1 = layers.Dense(8, activation="relu", name="dense_1")
        self.dense_2 = layers.Dense(4, name="dense_2")

    def call(self, x):
        return self.dense_2(self.dense_1(x))


class Encoder(layers.Layer):
    """Blocks inside a block, each naming its layers only within itself (as keras-hub's ViT does)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [Mlp(name="mlp"), Mlp(name="mlp")]

    def call(self, x):
        for block in self.blocks:
            x = ops.add(x, block(x))
        return x


def test_nested_composites_get_unique_names_from_their_owners():
    inputs = keras.Input((4,))
    model = randomized(keras.Model(inputs, Encoder(name="encoder")(inputs)))
    flat = tfprune.graph.flatten(model)
    names = [layer.name for layer in flat.layers[1:]]
    assert len(set(names)) == len(names) == 4
    assert all(name.startswith("encoder_") and name.endswith(("dense_1", "dense_2")) for name in names)
    x = sample((3, 4))
    np.testing.assert_allclose(ops.convert_to_numpy(flat(x)), ops.convert_to_numpy(model(x)), atol=1e-5)


@pytest.mark.parametrize(  # graph: test_surgery
    "module_name",
    ["tfprune.magnitude.policy", "tfprune.tfmot.sparsity.keras", "tfprune.handlers_keras_hub", "tfprune.criteria.base",
     "tfprune._batch_axis"],
)
def test_docstring_examples_run(module_name):
    import doctest
    import importlib

    module = importlib.import_module(module_name)
    extraglobs = {"tfprune": tfprune, "keras": keras}
    results = doctest.testmod(module, extraglobs=extraglobs, optionflags=doctest.ELLIPSIS)
    assert results.attempted > 0 and results.failed == 0


class TokensToImage(layers.Layer):
    """keras-hub-style (SegFormer's Mix-FFN): reshapes with the traced batch size and the width written out."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.expand = layers.Dense(units, name="expand")
        self.depthwise = layers.DepthwiseConv2D(3, padding="same", name="depthwise")
        self.project = layers.Dense(4, name="project")

    def call(self, x):
        x = self.expand(x)
        batch, length, width = ops.shape(x)  # batch is None on symbolic tensors
        side = int(length**0.5)
        x = self.depthwise(ops.reshape(x, (batch, side, side, width)))
        return self.project(ops.reshape(x, (batch, length, width)))


class MixBlock(layers.Layer):
    """Returns `(x, None)` when asked for no attention scores, as keras-hub's DeiT blocks do."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.mix = TokensToImage(12, name="mix")

    def call(self, x, return_scores=False):
        return x + self.mix(x), (x if return_scores else None)


class MixEncoder(layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.blocks = [MixBlock(name=f"block_{index}") for index in range(2)]

    def call(self, x):
        for block in self.blocks:
            x, _ = block(x)
        return x


def test_nested_blocks_returning_none_and_reshaping_with_the_traced_batch_size_are_inlined_and_pruned(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 4))
    model = keras.Model(inputs, layers.Dense(3, name="head")(MixEncoder(name="encoder")(inputs)))
    flat = tfprune.graph.flatten(model)
    assert not any(tfprune.graph.is_composite(layer) for layer in flat.layers)
    reshapes = [op for op in flat.operations if type(op).__name__ == "Reshape"]
    assert len(reshapes) == 4 and all(op.newshape[0] == -1 for op in reshapes)  # runs at any batch size
    # and every size stays known (the -1 beside the batch entry was worked out).
    assert [tuple(op._inbound_nodes[0].outputs[0].shape) for op in reshapes[:2]] == [(None, 4, 4, 12), (None, 16, 12)]
    x = np.random.default_rng(0).normal(size=(3, 16, 4)).astype("float32")
    np.testing.assert_allclose(flat(x), model(x), atol=1e-6)
    # The expansion width is written in the reshapes: pruning it rewrites them.
    small, result = tfprune.prune(model, "l1", rate=0.5, round_to=1, verbose=0)
    assert result.widths_after == {"encoder_block_0_mix_expand": 6, "encoder_block_1_mix_expand": 6}
    assert [op.newshape for op in small.operations if type(op).__name__ == "Reshape"][:2] == [(-1, 4, 4, 6), (-1, 16, 6)]
    assert small(x).shape == (3, 16, 3)
    small.save(tmp_path / "small.keras")
    np.testing.assert_allclose(keras.models.load_model(tmp_path / "small.keras")(x), small(x), atol=1e-6)


class DoubledInTraining(layers.Layer):
    def call(self, x, training=None):
        return ops.add(x, x) if training else x


class CentredInTraining(layers.Layer):
    def call(self, x, training=None):
        return x - ops.mean(x, axis=-1, keepdims=True) if training else x


def test_a_layer_that_is_not_inlined_says_why_in_its_groups_reason():
    inputs = keras.Input((4,))
    x = layers.Dense(6, name="dense")(inputs)
    x = NoisyInTraining(name="noisy")(Scaled(6, name="scaled")(x))
    graph = tfprune.graph.build(keras.Model(inputs, layers.Dense(2, name="head")(x)), unknown="freeze")
    assert "it could not be inlined and has no handler" in graph["dense"].reason  # Scaled holds a weight
    flat = tfprune.graph.flatten(keras.Model(inputs, layers.Dense(2)(DoubledInTraining(name="doubled")(inputs))))
    assert flat.get_layer("doubled")._tfprune_not_inlined == "its call branches on `training`"
    # Not inlined and mixing channels in training: frozen, and the group says why.
    x = CentredInTraining(name="centred")(layers.Dense(6, name="first")(inputs))
    model = keras.Model(inputs, layers.Dense(2, name="last")(x))
    with pytest.warns(UserWarning, match=r"cannot see inside layer 'centred' \(CentredInTraining\) \(its call branches"):
        graph = tfprune.graph.build(tfprune.graph.flatten(model))
    assert "it could not be inlined (its call branches on `training`)" in graph["first"].reason
    assert "changes other output channels in training mode" in graph["first"].reason


class Windows(layers.Layer):
    """Swin-style: splits the image into windows with the batch size read from `ops.shape`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.expand = layers.Dense(12, name="expand")
        self.project = layers.Dense(4, name="project")

    def call(self, x):
        batch, height, width, channels = ops.shape(x)
        windows = ops.reshape(x, (batch * 4, height // 2, width // 2, channels))  # not a real partition
        windows = self.project(ops.relu(self.expand(windows)))
        batch = ops.shape(windows)[0] // 4
        return x + ops.reshape(windows, (batch, height, width, 4))


class ZerosOfBatch(layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.Dense(4, name="dense")

    def call(self, x):
        return self.dense(x) + ops.zeros((ops.shape(x)[0], 4))


def test_a_block_computing_with_the_batch_size_is_inlined_with_minus_one_in_its_reshapes(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 4))
    model = keras.Model(inputs, layers.Conv2D(3, 1, name="head")(Windows(name="windows")(inputs)))
    flat = tfprune.graph.flatten(model)
    assert not any(tfprune.graph.is_composite(layer) for layer in flat.layers)
    assert [op.newshape[0] for op in flat.operations if type(op).__name__ == "Reshape"] == [-1, -1]
    x = np.random.default_rng(0).normal(size=(3, 4, 4, 4)).astype("float32")  # any batch size runs
    np.testing.assert_allclose(flat(x), model(x), atol=1e-6)
    small, result = tfprune.prune(model, "l1", rate=0.5, round_to=1, verbose=0)
    assert result.widths_after == {"windows_expand": 6}
    assert small(x).shape == (3, 4, 4, 3)


def test_a_block_using_the_batch_size_otherwise_stays_whole_saying_why():
    inputs = keras.Input((4,))
    flat = tfprune.graph.flatten(keras.Model(inputs, ZerosOfBatch(name="zeros")(inputs)))
    assert flat.get_layer("zeros")._tfprune_not_inlined == (
        "its call makes a tensor of the batch size, which is unknown until it runs"
    )


class FoldsThenReadsTheBatch(layers.Layer):
    """Folds 4 tokens into the batch, then reshapes back with `ops.shape` of the input:
    the -1 beside that batch size is 16 only because each sample fills 4 rows of
    the folded tensor (a -1 in place of the batch alone would be worked out as 4)."""

    def __init__(self, stack=False, **kwargs):
        super().__init__(**kwargs)
        self.stack = stack
        self.dense = layers.Dense(2, name="dense")

    def call(self, x):
        batch = ops.shape(x)[0]
        folded = ops.reshape(x, (-1, 4, 8))
        if self.stack:  # repeats the batch along the first axis: its rows per sample are not worked out
            folded = ops.tile(folded, (2, 1, 1))
        return ops.reshape(self.dense(folded), (batch, -1, 2))


def test_a_reshape_beside_the_batch_size_is_worked_out_from_the_rows_each_sample_fills():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 8))
    model = keras.Model(inputs, FoldsThenReadsTheBatch(name="fold")(inputs))
    flat = tfprune.graph.flatten(model)
    assert not any(tfprune.graph.is_composite(layer) for layer in flat.layers)
    assert [tuple(op.newshape) for op in flat.operations if type(op).__name__ == "Reshape"] == [
        (-1, 4, 8), (-1, 16, 2)
    ]  # fmt: skip
    for batch in (1, 3):
        x = np.random.default_rng(batch).normal(size=(batch, 16, 8)).astype("float32")
        np.testing.assert_allclose(flat(x), model(x), atol=1e-6)


def test_a_reshape_beside_a_batch_size_of_unknown_rows_is_not_traced():
    inputs = keras.Input((16, 8))
    model = keras.Model(inputs, FoldsThenReadsTheBatch(stack=True, name="fold")(inputs))
    flat = tfprune.graph.flatten(model)
    assert "sizes read from a tensor whose batch or sequence length is unknown" in (
        flat.get_layer("fold")._tfprune_not_inlined
    )
    x = np.random.default_rng(0).normal(size=(3, 16, 8)).astype("float32")
    np.testing.assert_allclose(flat(x), model(x), atol=1e-6)


def test_rows_per_sample_follow_reshapes_and_stop_at_operations_on_the_first_axis():
    from tfprune import _batch_axis

    x = keras.Input((8, 8, 3))
    windows = ops.reshape(x, (-1, 4, 4, 3))  # 4 windows per sample
    moved = ops.transpose(windows, (0, 2, 1, 3))  # the first axis stays
    back = ops.reshape(layers.Dense(6)(moved), (-1, 16, 6))
    joined = ops.concatenate([windows, windows], axis=0)  # joined along the first axis: the rows add up
    assert [_batch_axis.factor(tensor, {}) for tensor in (x, windows, moved, back, joined)] == [1, 4, 4, 4, 8]
    assert _batch_axis.factor(ops.reshape(windows, (-1, 8, 8, 3)), {}) == 1
    assert _batch_axis.factor(ops.tile(windows, (2, 1, 1, 1)), {}) is None
    assert _batch_axis.factor(ops.transpose(windows, (1, 0, 2, 3)), {}) is None


def test_tracing_restores_keras_and_touches_no_other_thread():
    from tfprune import graph_traced_ops as graph

    inputs = keras.Input((4,))
    flat = tfprune.graph.flatten(keras.Model(inputs, ZerosOfBatch(name="zeros")(inputs)))  # its trace fails
    assert flat.get_layer("zeros")._tfprune_not_inlined
    assert keras.layers.Layer.__call__ is graph._LAYER_CALL and keras.ops.shape is graph._SHAPE
    # While another thread traces, the patched functions act as Keras's own here.
    graph._TRACER_THREAD[0] = -1
    try:
        assert graph._traced_shape(keras.KerasTensor((None, 4)))[0] is None
        assert keras.ops.reshape(keras.KerasTensor((None, 4)), (-1, 2, 2)).shape == (None, 2, 2)
    finally:
        graph._TRACER_THREAD[0] = None


def test_a_nested_model_fed_one_axis_less_or_more_gets_it_as_keras_gives_it():
    # keras-hub's SD3 feeds a `(batch,)` timestep to its MMDiT's `Input((1,))`, and
    # `Functional.call` adds the axis; inlined, the block must see `(batch, 1)` too.
    timestep = keras.Input((1,), name="timestep")
    features = keras.Input((3, 1), name="features")
    frequencies = np.linspace(0.0, 1.0, 4, dtype="float32")[None]
    inner = keras.Model([timestep, features], layers.Dense(2, name="fc")(timestep * frequencies)
                        + ops.sum(features, axis=1), name="inner")  # fmt: skip
    outer_timestep, outer_features = keras.Input(()), keras.Input((3, 1, 1))
    model = keras.Model([outer_timestep, outer_features], inner([outer_timestep, outer_features]))
    flat = tfprune.graph.flatten(model)
    x = [np.arange(4, dtype="float32"), np.ones((4, 3, 1, 1), "float32")]
    np.testing.assert_allclose(flat(x), model(x), atol=1e-6)


class _SubclassedEmbedder(keras.Model):
    """Like keras-hub's Flux `MLPEmbedder`: a subclassed model used as a block of a functional one."""

    def __init__(self, width, **kwargs):
        super().__init__(**kwargs)
        self.first = layers.Dense(width, name="first")
        self.second = layers.Dense(width, name="second")

    def call(self, x):
        return self.second(ops.silu(self.first(x)))


def test_a_subclassed_model_used_as_a_layer_is_inlined_like_a_composite(tmp_path):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,), name="features")
    x = _SubclassedEmbedder(8, name="embedder")(inputs)
    model = keras.Model(inputs, layers.Dense(2, name="head")(x))
    assert tfprune.graph.needs_flattening(model)
    flat = tfprune.graph.flatten(model)
    assert {"embedder_first", "embedder_second"} <= {layer.name for layer in flat.layers}
    x = np.random.default_rng(0).normal(size=(3, 5)).astype("float32")
    np.testing.assert_allclose(flat(x), model(x), atol=1e-6)
    small, result = tfprune.prune(model, "l1", rate=0.5, round_to=1)
    assert result.widths_after == {"embedder_first": 4, "embedder_second": 4}
    small.save(tmp_path / "small.keras")
    np.testing.assert_allclose(keras.models.load_model(tmp_path / "small.keras")(x), small(x), atol=1e-6)


class _BiasedAttention(layers.Layer):
    """Like T5's first attention layer: a weight of its own, and `(x, bias, None)` returned."""

    def build(self, input_shape):
        self.bias = self.add_weight(shape=(input_shape[-1],), initializer="zeros", name="bias")

    def call(self, x):
        # The bias as a computed tensor: Keras on JAX cannot infer the spec of a returned variable.
        return x + self.bias, ops.multiply(self.bias, 1.0), None


class _HeadsAttention(layers.Layer):
    """Reshapes to `(2 * batch, -1, 1, 4)` (a size no tensor holds, so no trace), returns `(x, None)` like T5's."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.project = layers.Dense(8, name="project")

    def call(self, x):
        heads = ops.reshape(self.project(x), (ops.shape(x)[0] * 2, -1, 1, 4))
        return ops.reshape(heads, (ops.shape(x)[0], -1, 8)), None


class _T5LikeBlock(layers.Layer):
    def __init__(self, attention, **kwargs):
        super().__init__(**kwargs)
        self.attention = attention

    def call(self, x):
        return self.attention(x)[0]


@pytest.mark.parametrize("attention, reason", [
    (_BiasedAttention, r"its block '.*' \(_BiasedAttention\) holds weights of its own, so it is not inlined, and "
                       r"returns None, which Keras cannot record as one operation"),
    (_HeadsAttention, r"its block '.*' cannot be inlined \(its call reshapes to .*\) and returns None, which Keras "
                      r"cannot record as one operation"),
])  # fmt: skip
def test_a_block_that_returns_none_and_cannot_be_inlined_is_named_as_the_reason(attention, reason):
    inputs = keras.Input((None, 8))
    model = keras.Model(inputs, _T5LikeBlock(attention(name="attention"), name="block")(inputs))
    flat = tfprune.graph.flatten(model)
    assert re.search(reason, flat.get_layer("block")._tfprune_not_inlined), flat.get_layer("block")._tfprune_not_inlined


class _FourierMixer(layers.Layer):
    """Like FNet's encoder: mixes tokens and channels with `ops.fft2`, which needs both sizes known."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.Dense(8, name="dense")

    def call(self, x):
        real, _ = ops.fft2((x, ops.zeros_like(x)))
        return self.dense(real)


def test_a_composite_a_keras_operation_refuses_to_record_names_that_operation():
    inputs = keras.Input((None, 8))
    model = keras.Model(inputs, _FourierMixer(name="mixer")(inputs))
    why = tfprune.graph.flatten(model).get_layer("mixer")._tfprune_not_inlined
    # Traced first with sequence-length markers, then without: the op is named on the second try.
    assert re.search(r"its call fails on symbolic tensors in operation 'fft2(_\d+)?' \(keras.ops.math.FFT2\)", why), why
