"""keras-hub layers whose own config does not load back, copied so that a pruned model reloads.

Flux's `keras_hub.layers.RMSNormalization` (a constructor without `name`)
is copied as `keras.layers.RMSNormalization`; D-FINE's `DFineDecoder` (a
config holding a Variable once built, a `build` refusing the list a
`.keras` file gives back) is copied with a config that loads back. The
slow test prunes the sweep's configurations that tfprune refused before
(Flux and D-FINE would not reload; Stable Diffusion 3's scheduler failed on
a probe of 0 steps).
"""

import json
import warnings

import keras
import numpy as np
import pytest
from keras_hub_sweep import CONFIGURATIONS

import tfprune
from tfprune import handlers

keras_hub = pytest.importorskip("keras_hub", reason="install the `keras-hub` extra")


class QueryKeyNorm(keras.layers.Layer):
    """Flux's `QKNorm`: two keras-hub RMS norms in a composite layer (inlined by `flatten`)."""

    def __init__(self, width, **kwargs):
        super().__init__(**kwargs)
        self.query_norm = keras_hub.layers.RMSNormalization(width)
        self.key_norm = keras_hub.layers.RMSNormalization(width)

    def build(self, input_shape):
        self.query_norm.build(input_shape)
        self.key_norm.build(input_shape)

    def call(self, query, key):
        return self.query_norm(query), self.key_norm(key)


def _outputs(model, inputs):
    return [keras.ops.convert_to_numpy(value) for value in keras.tree.flatten(model(inputs, training=False))]


def _norm_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 8))
    query = keras.layers.Dense(8, name="query")(inputs)
    key = keras.layers.Dense(8, name="key")(inputs)
    norms = QueryKeyNorm(8, name="qk_norm")
    query, key = norms(query, key)
    for norm in (norms.query_norm, norms.key_norm):  # scales other than the initial ones
        norm.scale.assign(np.random.default_rng(len(norm.name)).uniform(0.5, 1.5, (8,)))
    outputs = keras.layers.Dense(3, name="head")(keras.layers.Concatenate()([query, key]))
    return keras.Model(inputs, outputs)


def test_keras_hub_rms_normalization_is_copied_as_keras_own_with_the_same_outputs_and_reloads(tmp_path):
    model = _norm_model()
    x = np.random.default_rng(0).standard_normal((2, 5, 8)).astype("float32")
    flat = tfprune.graph.flatten(model)
    norms = [layer for layer in flat.layers if "norm" in type(layer).__name__.lower()]
    assert [type(layer) for layer in norms] == [keras.layers.RMSNormalization] * 2
    np.testing.assert_allclose(_outputs(flat, x)[0], _outputs(model, x)[0], atol=1e-6, rtol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small, result = tfprune.prune(model, "l1", rate=0.5, targets="hidden", round_to=1, verbose=0)
    assert small.count_params() < model.count_params()
    small.save(tmp_path / "small.keras")
    reloaded = keras.models.load_model(tmp_path / "small.keras")
    np.testing.assert_allclose(_outputs(reloaded, x)[0], _outputs(small, x)[0], atol=1e-6, rtol=0)


def test_keras_hub_rms_normalization_under_mixed_precision_is_not_copied_as_keras_own():
    # keras-hub's layer computes in float32 whatever its policy: a Keras copy would not.
    norm = keras_hub.layers.RMSNormalization(8)
    norm.dtype_policy = keras.DTypePolicy("mixed_float16")
    assert handlers.handler_for(norm).copy(norm) is None


def test_dfine_decoder_copy_writes_a_config_that_loads_back_with_the_same_weights():
    keras.utils.set_random_seed(0)
    decoder = CONFIGURATIONS["DFineBackbone"].build(keras_hub).get_layer("decoder")
    with pytest.raises(TypeError):  # keras-hub's own: the built decoder's config holds a Variable
        json.dumps(decoder.get_config())
    copy = handlers.handler_for(decoder).copy(decoder)
    config = json.loads(json.dumps(copy.get_config()))
    assert config["upsampling_factor"] == pytest.approx(0.5) and copy.get_build_config() is None
    assert len(copy.weights) == len(decoder.weights)
    for got, want in zip(copy.get_weights(), decoder.get_weights()):
        np.testing.assert_array_equal(got, want)
    assert type(decoder).from_config(config).name == "decoder"


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, removed",
    # Stable Diffusion 3 loses little: its MMDiT block is not inlined (its trace reshapes to the
    # batch size) and pins the diffuser's hidden width, and the VAE's channels stay.
    [("FluxBackbone", 0.1), ("DFineBackbone", 0.1), ("StableDiffusion3Backbone", 0.01)],
)
def test_formerly_refused_configurations_prune_run_and_reload(name, removed, tmp_path):
    entry = CONFIGURATIONS[name]
    keras.utils.set_random_seed(0)
    model = entry.build(keras_hub)
    sample = entry.sample()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small, result = tfprune.prune(model, "l1", **entry.prune_arguments(), verbose=0)
    assert small.count_params() <= (1 - removed) * model.count_params(), result
    pruned = _outputs(small, sample)
    assert all(np.isfinite(value).all() for value in pruned)
    small.save(tmp_path / "small.keras")
    reloaded = _outputs(keras.models.load_model(tmp_path / "small.keras"), sample)
    for got, want in zip(reloaded, pruned):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
