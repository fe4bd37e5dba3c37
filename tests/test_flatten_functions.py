"""`tfprune.graph.flatten` and operations that take a Python function; `tfprune.prune`'s probe of counts."""

import keras
import numpy as np
from keras import layers, ops

import tfprune
from tfprune import pruning


class GatherRows(layers.Layer):
    """Picks rows of each example with `keras.ops.map` of a function local to `call` (keras-hub's D-FINE)."""

    def call(self, data, indices):
        def gather(elements):
            rows, index = elements
            return ops.take(rows, index, axis=0)

        return ops.map(gather, (data, indices))


class MapRelu(layers.Layer):
    """`keras.ops.map` of a Keras activation, which a `.keras` file names."""

    def call(self, x):
        return ops.map(keras.activations.relu, x)


def _gather_model():
    data = keras.Input((5, 4), name="data")
    indices = keras.Input((3,), dtype="int32", name="indices")
    outputs = layers.Dense(2, name="head")(GatherRows(name="gather_rows")(data, indices))
    return keras.Model([data, indices], outputs)


def test_block_passing_a_local_function_to_an_operation_is_kept_whole_and_the_flat_model_reloads(tmp_path):
    keras.utils.set_random_seed(0)
    model = _gather_model()
    inputs = [
        np.random.default_rng(0).standard_normal((2, 5, 4)).astype("float32"),
        np.array([[4, 0, 2], [1, 1, 3]], dtype="int32"),
    ]
    flat = tfprune.graph.flatten(model)
    kept = flat.get_layer("gather_rows")
    assert isinstance(kept, GatherRows)
    assert "'gather'" in kept._tfprune_not_inlined and ".keras" in kept._tfprune_not_inlined
    np.testing.assert_allclose(flat(inputs), model(inputs), atol=1e-6, rtol=0)
    flat.save(tmp_path / "flat.keras")
    loaded = keras.models.load_model(tmp_path / "flat.keras", custom_objects={"GatherRows": GatherRows})
    np.testing.assert_allclose(loaded(inputs), model(inputs), atol=1e-6, rtol=0)


def test_block_mapping_a_function_a_keras_file_names_is_still_inlined():
    inputs = keras.Input((3, 4))
    model = keras.Model(inputs, layers.Dense(2)(MapRelu(name="map_relu")(inputs)))
    flat = tfprune.graph.flatten(model)
    assert not any(isinstance(layer, MapRelu) for layer in flat.layers)
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype("float32")
    np.testing.assert_allclose(flat(x), model(x), atol=1e-6, rtol=0)


def test_probe_gives_one_to_an_integer_input_of_one_value_per_example_and_zero_token_ids():
    # A diffusion model's `num_steps`: its scheduler has no noise level for step 1 at 0 steps.
    tokens = keras.Input((None,), dtype="int32", name="token_ids")
    steps = keras.Input((), dtype="int32", name="num_steps")
    scale = keras.Input((), dtype="float32", name="guidance_scale")
    embedded = layers.Embedding(10, 4)(tokens)
    outputs = ops.multiply(embedded, ops.cast(ops.reshape(steps, (-1, 1, 1)), "float32"))
    outputs = ops.multiply(outputs, ops.reshape(scale, (-1, 1, 1)))
    model = keras.Model({"token_ids": tokens, "num_steps": steps, "guidance_scale": scale}, outputs)
    probe = pruning._probe_inputs(model)
    np.testing.assert_array_equal(probe["num_steps"], np.ones((1,), "int32"))
    np.testing.assert_array_equal(probe["token_ids"], np.zeros((1, pruning._PROBE_SIZE), "int32"))
    assert 0.0 <= float(probe["guidance_scale"][0]) < 1.0  # floats stay uniform in [0, 1)
