import doctest
import json

import keras
import numpy as np
import pytest

import tfprune
from tfprune import _analysis_report, _macs, analysis


def single_layer_model(input_shape, layer):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, layer(inputs))


# (input shape, layer, expected params, expected MACs), every expectation worked
# out by hand from the shapes: output positions x kernel positions x inputs per
# output channel x output channels (+ biases for params).
HAND_COMPUTED = {
    "conv1d_groups": (
        (10, 4),
        keras.layers.Conv1D(6, 3, groups=2, name="layer"),
        3 * 2 * 6 + 6,
        8 * 3 * (4 // 2) * 6,  # length 10 - 3 + 1 = 8
    ),
    "conv2d_strided_same": (
        (9, 9, 4),
        keras.layers.Conv2D(8, 3, strides=2, padding="same", name="layer"),
        3 * 3 * 4 * 8 + 8,
        5 * 5 * 3 * 3 * 4 * 8,  # ceil(9 / 2) = 5
    ),
    "conv2d_groups": (
        (9, 9, 4),
        keras.layers.Conv2D(8, 3, groups=4, name="layer"),
        3 * 3 * 1 * 8 + 8,
        7 * 7 * 3 * 3 * 1 * 8,
    ),
    "conv2d_channels_first": (
        (3, 10, 12),
        keras.layers.Conv2D(5, (3, 5), data_format="channels_first", name="layer"),
        3 * 5 * 3 * 5 + 5,
        8 * 8 * 3 * 5 * 3 * 5,  # (10 - 3 + 1) x (12 - 5 + 1)
    ),
    "conv3d": (
        (4, 5, 6, 2),
        keras.layers.Conv3D(3, 2, use_bias=False, name="layer"),
        2 * 2 * 2 * 2 * 3,
        3 * 4 * 5 * 2 * 2 * 2 * 2 * 3,
    ),
    "depthwise_conv2d_multiplier": (
        (7, 7, 3),
        keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="layer"),
        3 * 3 * 3 * 2 + 3 * 2,
        5 * 5 * 3 * 3 * 3 * 2,
    ),
    "depthwise_conv1d": (
        (9, 4),
        keras.layers.DepthwiseConv1D(3, name="layer"),
        3 * 4 + 4,
        7 * 3 * 4,
    ),
    "separable_conv2d": (
        (7, 7, 3),
        keras.layers.SeparableConv2D(8, 3, depth_multiplier=2, name="layer"),
        3 * 3 * 3 * 2 + 3 * 2 * 8 + 8,
        5 * 5 * 3 * 3 * 3 * 2 + 5 * 5 * (3 * 2) * 8,  # depthwise + pointwise
    ),
    "separable_conv1d": (
        (9, 4),
        keras.layers.SeparableConv1D(5, 3, name="layer"),
        3 * 4 + 4 * 5 + 5,
        7 * 3 * 4 + 7 * 4 * 5,
    ),
    "conv2d_transpose": (
        (5, 5, 3),
        keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same", name="layer"),
        3 * 3 * 4 * 3 + 4,
        5 * 5 * 3 * 3 * 3 * 4,  # every input position times the whole kernel
    ),
    "conv1d_transpose": (
        (6, 2),
        keras.layers.Conv1DTranspose(3, 4, strides=2, name="layer"),
        4 * 3 * 2 + 3,
        6 * 4 * 2 * 3,
    ),
    "dense": ((5,), keras.layers.Dense(3, name="layer"), 5 * 3 + 3, 5 * 3),
    "dense_per_timestep": ((7, 5), keras.layers.Dense(3, name="layer"), 5 * 3 + 3, 7 * 5 * 3),
    "time_distributed_conv2d": (
        (4, 6, 6, 2),
        keras.layers.TimeDistributed(keras.layers.Conv2D(3, 3), name="layer"),
        3 * 3 * 2 * 3 + 3,
        4 * (4 * 4 * 3 * 3 * 2 * 3),  # 4 steps
    ),
}


@pytest.mark.parametrize("case", sorted(HAND_COMPUTED))
def test_params_and_macs_match_hand_computed_values(case):
    input_shape, layer, expected_params, expected_macs = HAND_COMPUTED[case]
    layer = layer.__class__.from_config(layer.get_config())  # fresh layer per test
    result = tfprune.analyze(single_layer_model(input_shape, layer))
    record = result["layer"]
    assert record.params == expected_params
    assert record.trainable_params == expected_params
    assert record.macs == expected_macs
    assert record.flops == 2 * expected_macs
    assert (result.params, result.macs, result.flops) == (
        expected_params,
        expected_macs,
        2 * expected_macs,
    )


def test_non_layer_operations_and_excluded_layers_count_zero_macs():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    y = x * 0.5
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.MaxPooling2D(name="pool")(x)
    outputs = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, outputs)

    result = tfprune.analyze(model)

    by_type = {record.type: record for record in result.layers}
    scale = by_type["Multiply"]
    assert (scale.params, scale.macs, scale.output_shape) == (0, 0, (None, 8, 8, 4))
    for name in ("bn", "relu", "add", "pool", "gap"):
        assert result[name].macs == 0
    assert result["bn"].params == 4 * 4
    assert result["bn"].trainable_params == 2 * 4
    assert result.macs == 8 * 8 * 3 * 3 * 3 * 4
    assert result.uncounted_layers == ()
    assert result.params == model.count_params()
    assert [record.name for record in result.layers][:2] == [model.layers[0].name, "conv"]


def test_shared_layer_counts_params_once_and_macs_per_call():
    inputs = keras.Input((6,))
    shared = keras.layers.Dense(4, name="shared")
    outputs = keras.layers.Add()([shared(inputs), shared(inputs * 2.0)])
    model = keras.Model(inputs, outputs)

    result = tfprune.analyze(model)

    assert result["shared"].params == 6 * 4 + 4
    assert result["shared"].macs == 2 * 6 * 4
    assert result.params == model.count_params()


def test_nested_functional_model_is_expanded_and_counted_per_call():
    inner_inputs = keras.Input((6, 6, 4))
    inner = keras.Model(
        inner_inputs, keras.layers.Conv2D(2, 1, name="pointwise")(inner_inputs), name="block"
    )
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="stem")(inputs)
    x = keras.layers.Add()([inner(x), inner(x * 0.5)])
    outputs = keras.layers.Dense(3, name="head")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)

    result = tfprune.analyze(model)

    names = [record.name for record in result.layers]
    assert "block/pointwise" in names
    assert "block" not in names and not any(name.startswith("block/input") for name in names)
    assert result["block/pointwise"].macs == 2 * (6 * 6 * 4 * 2)  # called twice
    assert result["block/pointwise"].params == 4 * 2 + 2
    assert result.macs == 6 * 6 * 3 * 3 * 3 * 4 + 2 * 6 * 6 * 4 * 2 + 6 * 6 * 2 * 3
    assert result.params == model.count_params()


def test_sequential_model_and_nested_sequential():
    backbone = keras.Sequential(
        [keras.Input((10,)), keras.layers.Dense(8, name="hidden")], name="backbone"
    )
    model = keras.Sequential([keras.Input((10,)), backbone, keras.layers.Dense(2, name="logits")])

    result = tfprune.analyze(model)

    assert result["backbone/hidden"].macs == 10 * 8
    assert result["logits"].macs == 8 * 2
    assert result.macs == 10 * 8 + 8 * 2
    assert result.params == model.count_params()


def test_subclass_of_a_registered_layer_is_counted_through_its_base_class():
    class ScaledConv(keras.layers.Conv2D):
        pass

    model = single_layer_model((6, 6, 2), ScaledConv(3, 3, name="layer"))

    assert tfprune.analyze(model)["layer"].macs == 4 * 4 * 3 * 3 * 2 * 3


def test_unregistered_layer_with_weights_is_listed_as_uncounted_until_registered():
    class Scale(keras.layers.Layer):
        def build(self, input_shape):
            self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones")

        def call(self, inputs):
            return inputs * self.scale

    class Identity(keras.layers.Layer):
        def call(self, inputs):
            return inputs

    inputs = keras.Input((5, 3))
    x = Identity(name="identity")(inputs)
    outputs = keras.layers.Dense(2, name="dense")(Scale(name="scale")(x))
    model = keras.Model(inputs, outputs)

    result = tfprune.analyze(model)
    assert result["scale"].macs is None
    assert result["identity"].macs == 0
    assert result.uncounted_layers == ("scale",)
    assert result.macs == 5 * 3 * 2
    assert not result.complete and result.to_dict()["totals"]["complete"] is False
    assert "INCOMPLETE: MACs and FLOPs above leave out 1 layer(s) whose MACs are unknown: scale" in str(result)

    def scale_macs(layer, input_shape, output_shape):
        return int(np.prod(output_shape[1:]))

    assert tfprune.analysis.register_macs(Scale, scale_macs) is scale_macs
    result = tfprune.analyze(model)
    assert result["scale"].macs == 5 * 3
    assert result.uncounted_layers == ()
    assert result.complete and "INCOMPLETE" not in str(result)


def test_layers_inside_composite_blocks_are_counted():
    class Block(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.first = keras.layers.Conv2D(4, 3, padding="same", name="first")
            self.second = keras.layers.Conv2D(2, 1, name="second")

        def call(self, inputs):
            return self.second(keras.ops.relu(self.first(inputs)))

    inputs = keras.Input((6, 6, 3))
    model = keras.Model(inputs, Block(name="block")(inputs))
    result = tfprune.analyze(model)
    assert result.complete
    assert result.macs == 6 * 6 * (3 * 3 * 3 * 4 + 4 * 2)
    assert result["block_first"].macs == 6 * 6 * 3 * 3 * 3 * 4


def test_unknown_spatial_size_gives_none_macs():
    model = single_layer_model((None, None, 3), keras.layers.Conv2D(4, 3, name="layer"))

    result = tfprune.analyze(model)

    assert result["layer"].macs is None
    assert result.uncounted_layers == ("layer",)
    assert result.macs == 0


def test_register_macs_rejects_bad_arguments():
    with pytest.raises(TypeError, match=r"class as `layer_class`.*layer_class='Conv2D'"):
        tfprune.analysis.register_macs("Conv2D", lambda *args: 0)
    with pytest.raises(TypeError, match=r"callable `function` for Conv2D.*function=3"):
        tfprune.analysis.register_macs(keras.layers.Conv2D, 3)


def test_kernel_sparsity_counts_exact_zeros_of_kernels_only():
    inputs = keras.Input((5,))
    x = keras.layers.Dense(4, name="dense")(inputs)
    x = keras.layers.ReLU(name="relu")(x)
    outputs = keras.layers.Dense(2, name="logits")(x)
    model = keras.Model(inputs, outputs)
    kernel = np.arange(1, 21, dtype="float32").reshape(5, 4)
    kernel.flat[[0, 3, 7, 8, 11, 16, 19]] = 0.0  # 7 of 20 exact zeros
    kernel.flat[1] = 1e-30  # tiny but not zero
    model.get_layer("dense").set_weights([kernel, np.zeros(4, "float32")])  # zero bias ignored

    result = tfprune.analyze(model)

    assert result["dense"].kernel_params == 20
    assert result["dense"].nonzero_kernel_params == 13
    assert result["dense"].kernel_sparsity == pytest.approx(7 / 20)
    assert result["relu"].kernel_sparsity is None
    assert result["logits"].kernel_sparsity == 0.0
    assert result.kernel_params == 20 + 8
    assert result.nonzero_kernel_params == 13 + 8
    assert result.kernel_sparsity == pytest.approx(7 / 28)


def test_separable_conv_sparsity_covers_both_kernels():
    layer = keras.layers.SeparableConv2D(2, 3, name="layer")
    model = single_layer_model((5, 5, 2), layer)
    depthwise, pointwise, bias = layer.get_weights()
    depthwise[:] = 1.0
    pointwise[:] = 0.0  # all 2 x 2 pointwise entries
    layer.set_weights([depthwise, pointwise, bias])

    record = tfprune.analyze(model)["layer"]

    assert record.kernel_params == 3 * 3 * 2 + 2 * 2
    assert record.nonzero_kernel_params == 3 * 3 * 2


def test_layers_with_stripped_layer_report_effective_sparsity():
    class HalfMaskedDense(keras.layers.Dense):
        # Mimics tfprune's strip protocol: effective weights zero the first half.
        def stripped_layer(self):
            plain = keras.layers.Dense(self.units, name=self.name)
            plain.build((None, self.kernel.shape[0]))
            kernel, bias = self.get_weights()
            kernel[: kernel.shape[0] // 2] = 0.0
            plain.set_weights([kernel, bias])
            return plain

    model = single_layer_model((4,), HalfMaskedDense(3, name="layer", kernel_initializer="ones"))

    record = tfprune.analyze(model)["layer"]

    assert record.nonzero_kernel_params == 2 * 3
    assert record.kernel_sparsity == pytest.approx(0.5)
    assert record.macs == 4 * 3


def test_analyze_does_not_change_the_model():
    model = single_layer_model((6, 6, 2), keras.layers.Conv2D(3, 3))
    before = [weight.copy() for weight in model.get_weights()]

    tfprune.analyze(model)

    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_analyze_refuses_subclassed_models_and_other_objects():
    class Subclassed(keras.Model):
        def call(self, inputs):
            return inputs

    with pytest.raises(TypeError, match=r"tfprune.analyze.*subclassed model"):
        tfprune.analyze(Subclassed())
    with pytest.raises(TypeError, match=r"tfprune.analyze.*type str"):
        tfprune.analyze("model.keras")
    with pytest.raises(ValueError, match=r"tfprune.analyze.*is not built"):
        tfprune.analyze(keras.Sequential([keras.layers.Dense(2)]))


def test_to_dict_is_json_serialisable_and_labels_macs_and_flops():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    outputs = keras.layers.Dense(2, name="logits")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    result = tfprune.analyze(model)

    data = json.loads(result.to_json())

    assert data == result.to_dict()
    assert data["model"] == model.name
    assert data["totals"]["macs"] == 6 * 6 * 27 * 4 + 6 * 6 * 4 * 2
    assert data["totals"]["flops"] == 2 * data["totals"]["macs"]
    assert data["totals"]["params"] == model.count_params()
    assert "FLOPs = 2 x MACs" in data["mac_convention"]
    conv = next(layer for layer in data["layers"] if layer["name"] == "conv")
    assert conv["output_shape"] == [None, 6, 6, 4]
    assert conv["flops"] == 2 * conv["macs"]
    assert set(conv) >= {"type", "params", "trainable_params", "kernel_sparsity"}


def test_str_is_an_aligned_table_with_labelled_totals():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="a_rather_long_convolution_name")(inputs)
    outputs = keras.layers.Dense(2, name="logits")(keras.layers.Flatten()(x))
    result = tfprune.analyze(keras.Model(inputs, outputs))

    text = str(result)
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("Name"))
    table = lines[lines.index(header) + 2 : lines.index(header) + 2 + len(result.layers)]

    assert "MACs" in header and "FLOPs (2xMACs)" in header
    # The last column is right-aligned, so every row ends where the header ends.
    assert {len(line) for line in table} == {len(header)}
    column = header.index("MACs") + len("MACs")
    conv_row = next(line for line in table if line.startswith("a_rather_long_convolution_name"))
    assert conv_row[:column].endswith(f"{6 * 6 * 27 * 4:,}")
    assert f"MACs: {result.macs:,}" in text
    assert f"FLOPs (2xMACs): {2 * result.macs:,}" in text
    assert "Analysis(model=" in repr(result)


def test_unknown_layer_name_raises_key_error():
    result = tfprune.analyze(single_layer_model((3,), keras.layers.Dense(2, name="logits")))
    with pytest.raises(KeyError, match="no layer named 'missing'"):
        result["missing"]


def test_docstring_examples_run():
    for module in (analysis, _analysis_report, _macs):
        failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert failures == 0, module.__name__


@pytest.fixture(scope="module")
def applications():
    keras.backend.clear_session()
    return {
        name: tfprune.analyze(build(weights=None, input_shape=(224, 224, 3)))
        for name, build in {
            "MobileNetV3Large": keras.applications.MobileNetV3Large,
            "MobileNetV2": keras.applications.MobileNetV2,
            "ResNet50": keras.applications.ResNet50,
        }.items()
    }


# Published multiply-add counts at 224x224, 1000 classes:
# - MobileNetV3Large: 217M MACs, the table in Keras's MobileNetV3 docstring
#   (keras/src/applications/mobilenet_v3.py, "mobilenet_v3_large_1.0_224").
# - MobileNetV2: 300M multiply-adds, Sandler et al. 2018, "MobileNetV2:
#   Inverted Residuals and Linear Bottlenecks", Table 4 (MobileNetV2, 1.0).
# - ResNet50: 3.8 x 10^9 multiply-adds ("FLOPs" in the paper), He et al. 2016,
#   "Deep Residual Learning for Image Recognition", Table 1, 50-layer column.
@pytest.mark.parametrize(
    "name, reference_macs",
    [("MobileNetV3Large", 217e6), ("MobileNetV2", 300e6), ("ResNet50", 3.8e9)],
)
def test_keras_applications_match_published_macs_within_two_percent(
    applications, name, reference_macs
):
    result = applications[name]
    assert result.macs == pytest.approx(reference_macs, rel=0.02)
    assert result.flops == 2 * result.macs
    assert result.uncounted_layers == ()


def test_masked_and_str_layers_count_the_params_of_what_ships():
    inputs = keras.Input((6, 6, 2))
    conv = keras.layers.Conv2D(8, 3, name="conv")
    model = keras.Model(inputs, conv(inputs))
    schedule = tfprune.ConstantSparsity(0.5, begin_step=0)
    masked = tfprune.prune_low_magnitude(model, schedule=schedule)
    sparse = tfprune.sparsify(model)
    dense_params = 3 * 3 * 2 * 8 + 8  # kernel + bias; masks, step counters and thresholds excluded
    for candidate in (model, masked, sparse):
        record = tfprune.analyze(candidate)["conv"]
        assert record.params == dense_params
        assert record.macs == 4 * 4 * 3 * 3 * 2 * 8


def token_model(width=8, vocabulary=20, units=4):
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(vocabulary, width, name="embedding")(tokens)
    return keras.Model(tokens, keras.layers.Dense(units, name="dense")(x))


def test_unknown_sequence_length_is_listed_as_uncounted_and_lookups_count_zero():
    model = token_model()

    result = tfprune.analyze(model)

    assert result.sequence_length is None
    assert result["embedding"].macs == 0  # a lookup, at any length
    assert result["dense"].macs is None
    assert result.uncounted_layers == ("dense",) and not result.complete
    assert "sequence_length=..." in str(result)


def test_sequence_length_fixes_unknown_input_axes_without_touching_the_model():
    model = token_model(width=8, units=4)
    calls_before = {layer.name: len(layer._inbound_nodes) for layer in model.layers}

    result = tfprune.analyze(model, sequence_length=7)

    assert result.sequence_length == 7 and result.complete
    assert result["dense"].macs == 7 * 8 * 4
    assert result["dense"].output_shape == (None, 7, 4)
    assert result.to_dict()["sequence_length"] == 7
    assert "per example of 7 tokens" in str(result) and "sequence_length=..." not in str(result)
    assert {layer.name: len(layer._inbound_nodes) for layer in model.layers} == calls_before
    assert model.get_layer("dense").output.shape == (None, None, 4)


def test_sequence_length_reaches_into_nested_models():
    inner_inputs = keras.Input((None, 6))
    inner = keras.Model(
        inner_inputs, keras.layers.Dense(5, name="projection")(inner_inputs), name="inner"
    )
    tokens = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(30, 6)(tokens)
    model = keras.Model(tokens, keras.layers.Dense(2, name="head")(inner(x)))

    result = tfprune.analyze(model, sequence_length=9)

    assert result["inner/projection"].macs == 9 * 6 * 5
    assert result["head"].macs == 9 * 5 * 2
    assert result.complete


@pytest.mark.parametrize("value", [0, -3, 2.5, True, "12"])
def test_sequence_length_must_be_a_positive_integer(value):
    with pytest.raises(ValueError, match=rf"positive integer.*Received: sequence_length={value!r}"):
        tfprune.analyze(token_model(), sequence_length=value)


def test_sequence_length_is_refused_when_the_inputs_have_no_unknown_axis():
    model = single_layer_model((5, 3), keras.layers.Dense(2))
    with pytest.raises(
        ValueError, match=r"sequence_length=4.*no axis of unknown size.*\(None, 5, 3\)"
    ):
        tfprune.analyze(model, sequence_length=4)


def transformer_block(x, heads, key_dim, intermediate, name):
    attention = keras.layers.MultiHeadAttention(heads, key_dim, name=f"{name}_attention")
    x = keras.layers.LayerNormalization(name=f"{name}_norm")(x + attention(x, x))
    hidden = keras.layers.Dense(intermediate, activation="gelu", name=f"{name}_up")(x)
    return x + keras.layers.Dense(x.shape[-1], name=f"{name}_down")(hidden)


def test_language_model_with_tied_reverse_embedding_matches_closed_form():
    width, heads, intermediate, vocabulary, length = 12, 3, 20, 40, 6
    tokens = keras.Input((None,), dtype="int32")
    embedding = keras.layers.ReversibleEmbedding(vocabulary, width, name="tokens")
    x = embedding(tokens)
    x = transformer_block(x, heads, width // heads, intermediate, name="block")
    model = keras.Model(tokens, embedding(x, reverse=True))

    result = tfprune.analyze(model, sequence_length=length)

    per_token = 4 * width * width + 2 * width * intermediate + 2 * length * width
    logits = length * width * vocabulary  # the reverse call: hidden vectors times the table
    assert result["tokens"].macs == logits
    assert result["block_attention"].macs == length * (4 * width * width + 2 * length * width)
    assert result.macs == length * per_token + logits
    assert result.complete


def test_products_of_activations_are_counted():
    length, width, heads, head_dim = 5, 8, 2, 3
    sequence = keras.Input((length, width))
    query = keras.Input((length, heads, head_dim))
    other = keras.Input((7, heads, head_dim))
    scores = keras.ops.matmul(sequence, keras.ops.transpose(sequence, (0, 2, 1)))  # 5x5, 8 deep
    mixed = keras.ops.einsum("bqk,bkd->bqd", scores, sequence)  # 5x8, 5 deep
    attended = keras.ops.dot_product_attention(query, other, other)
    dotted = keras.layers.Dot(axes=2, name="dot")([sequence, sequence])  # 5x5, 8 deep
    layer_attention = keras.layers.Attention(name="attention")([sequence, mixed])
    contracted = keras.ops.tensordot(sequence, np.ones((width, 4), "float32"), axes=1)
    model = keras.Model(
        [sequence, query, other], [mixed, attended, dotted, layer_attention, contracted]
    )

    result = tfprune.analyze(model)

    by_type = {record.type: record.macs for record in result.layers}
    assert by_type["Matmul"] == length * length * width
    assert by_type["Einsum"] == length * width * length
    assert by_type["DotProductAttention"] == 2 * heads * length * 7 * head_dim
    assert by_type["Dot"] == length * length * width
    assert by_type["Attention"] == 2 * length * length * width
    assert by_type["Tensordot"] == length * 4 * width
    assert by_type["Transpose"] == 0
    assert result.complete


def test_operations_that_multiply_without_a_formula_are_uncounted():
    inputs = keras.Input((6, 6, 2))
    outputs = keras.ops.conv(inputs, np.ones((3, 3, 2, 4), "float32"))
    einsum_three = keras.ops.einsum(
        "bi,bi,bi->b", inputs[:, 0, 0], inputs[:, 1, 1], inputs[:, 2, 2]
    )
    model = keras.Model(inputs, [outputs, einsum_three])

    result = tfprune.analyze(model)

    uncounted = {record.type for record in result.layers if record.macs is None}
    assert uncounted == {"Conv", "Einsum"}
    assert not result.complete


@pytest.fixture(scope="module")
def keras_hub_module():
    return pytest.importorskip("keras_hub", reason="install the `keras-hub` extra")


HIDDEN, HEADS, INTERMEDIATE, LAYERS, MAX_LENGTH, EMBEDDING = 16, 4, 24, 2, 10, 8


def keras_hub_text_backbone(keras_hub, name):
    sizes = dict(
        num_layers=LAYERS, num_heads=HEADS, hidden_dim=HIDDEN,
        intermediate_dim=INTERMEDIATE, max_sequence_length=MAX_LENGTH,
    )  # fmt: skip
    models = keras_hub.models
    return {
        "Bert": lambda: models.BertBackbone(vocabulary_size=50, **sizes),
        "DistilBert": lambda: models.DistilBertBackbone(vocabulary_size=50, **sizes),
        "Roberta": lambda: models.RobertaBackbone(vocabulary_size=50, **sizes),
        "Electra": lambda: models.ElectraBackbone(vocab_size=50, embedding_dim=HIDDEN, **sizes),
        "Albert": lambda: models.AlbertBackbone(
            vocabulary_size=50, embedding_dim=EMBEDDING, num_groups=1, num_inner_repetitions=1,
            **sizes,
        ),
    }[name]()  # fmt: skip


def bert_like_macs(length, intermediate=INTERMEDIATE):
    """Closed form: per token and layer, q/k/v/o projections, MLP, Q K^T and softmax(...) V."""
    per_token = 4 * HIDDEN * HIDDEN + 2 * HIDDEN * intermediate + 2 * length * HIDDEN
    return LAYERS * length * per_token


# What each backbone adds to its encoder layers (embedding lookups count 0):
# a pooler Dense on the first token, ALBERT's projection of its embeddings.
EXTRA_MACS = {
    "Bert": lambda length: HIDDEN * HIDDEN,
    "DistilBert": lambda length: 0,
    "Roberta": lambda length: 0,
    "Electra": lambda length: HIDDEN * HIDDEN,
    "Albert": lambda length: HIDDEN * HIDDEN + length * EMBEDDING * HIDDEN,
}


@pytest.mark.parametrize("name", sorted(EXTRA_MACS))
def test_keras_hub_text_backbones_match_closed_form(keras_hub_module, name):
    model = keras_hub_text_backbone(keras_hub_module, name)

    default = tfprune.analyze(model)
    shorter = tfprune.analyze(model, sequence_length=4)

    assert default.sequence_length == MAX_LENGTH  # the backbone's max_sequence_length
    for result, length in ((default, MAX_LENGTH), (shorter, 4)):
        assert result.complete, result.uncounted_layers
        assert result.macs == bert_like_macs(length) + EXTRA_MACS[name](length)
    embeddings = [record for record in default.layers if "Embedding" in record.type]
    assert {record.type for record in embeddings} >= {"ReversibleEmbedding", "PositionEmbedding"}
    assert all(record.macs == 0 and record.params > 0 for record in embeddings)
    attention = [record for record in default.layers if record.type == "MultiHeadAttention"]
    # ALBERT shares one encoder layer between its layers: one record, every call counted.
    assert sum(record.macs for record in attention) == LAYERS * MAX_LENGTH * (
        4 * HIDDEN * HIDDEN + 2 * MAX_LENGTH * HIDDEN
    )
    with pytest.raises(
        ValueError, match=rf"sequence_length={MAX_LENGTH + 1}.*at most {MAX_LENGTH}"
    ):
        tfprune.analyze(model, sequence_length=MAX_LENGTH + 1)


def test_pruned_keras_hub_backbone_is_counted_at_its_position_table_length(keras_hub_module):
    model = keras_hub_text_backbone(keras_hub_module, "Bert")

    small, result = tfprune.prune(model, criterion="l1", rate=0.5, targets="mlp")
    analysis = tfprune.analyze(small)

    (width,) = {
        layer.units
        for layer in small.layers
        if layer.name.endswith("feedforward_intermediate_dense")
    }
    assert width < INTERMEDIATE
    assert not hasattr(small, "max_sequence_length")  # read from the PositionEmbedding table
    assert analysis.sequence_length == MAX_LENGTH and analysis.complete
    expected = bert_like_macs(MAX_LENGTH, width) + HIDDEN * HIDDEN
    assert analysis.macs == result.macs_after == expected
    assert result.macs_before == bert_like_macs(MAX_LENGTH) + HIDDEN * HIDDEN


def test_keras_hub_task_model_takes_its_backbone_length(keras_hub_module):
    backbone = keras_hub_text_backbone(keras_hub_module, "Bert")
    classifier = keras_hub_module.models.BertTextClassifier(
        backbone, num_classes=3, preprocessor=None
    )

    result = tfprune.analyze(classifier)

    assert result.sequence_length == MAX_LENGTH and result.complete
    assert result.macs == bert_like_macs(MAX_LENGTH) + HIDDEN * HIDDEN + HIDDEN * 3
