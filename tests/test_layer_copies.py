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
