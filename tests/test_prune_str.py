"""`tfprune.prune` (API and CLI) and `prune_low_magnitude` on models that hold STR layers."""

import keras
import numpy as np
import pytest

import tfprune
from tfprune import cli

# Filters 1 and 3 of "str_a" (L2 norms 0.22 and 0.32) are below the threshold sigmoid(0) = 0.5.
ZEROED_KERNEL = np.array([[1.0, 0.1, 0.0, 0.3], [0.0, 0.2, 2.0, 0.1]]).reshape(1, 1, 2, 4)


def _str_model():
    """A channel-mode STR CNN (as `tfprune.sparsify(model, mode="channel")` makes) with two filters at zero."""
    inputs = keras.Input((6, 6, 2))
    x = tfprune.layers.STRConv2D(4, 1, mode="channel", s_init=0.0, name="str_a")(inputs)
    x = keras.layers.ReLU()(x)
    x = tfprune.layers.STRConv2D(5, 3, padding="same", mode="channel", s_init=-3.0, name="str_b")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, tfprune.layers.STRDense(3, s_init=-3.0, name="logits")(x))
    model.get_layer("str_a")._kernel.assign(ZEROED_KERNEL)
    model.get_layer("str_a").bias.assign(np.zeros(4))  # a zero filter with a bias is a constant, not a dead channel
    return model


def _sample(seed=0):
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (4, 6, 6, 2)).astype("float32")


def test_str_zero_filters_without_a_rate_removes_exactly_the_zero_filters_and_keeps_outputs(tmp_path):
    model = _str_model()
    np.testing.assert_array_equal(model.get_layer("str_a").zero_filters(), [False, True, False, True])
    before = model.get_weights()
    pruned, result = tfprune.prune(model, "str_zero_filters", round_to=1)
    assert pruned.get_layer("str_a").filters == 2
    assert pruned.get_layer("str_b").filters == 5  # no zero filter there
    assert not any(hasattr(layer, "stripped_layer") for layer in pruned.layers)  # plain layers: strip was done
    assert result.params_after == pruned.count_params() < result.params_before
    np.testing.assert_allclose(pruned.predict(_sample(), verbose=0), model.predict(_sample(), verbose=0), atol=1e-5)
    for given, now in zip(before, model.get_weights()):
        np.testing.assert_array_equal(given, now)  # the user's model is not modified
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    np.testing.assert_allclose(
        keras.saving.load_model(path).predict(_sample(1), verbose=0), pruned.predict(_sample(1), verbose=0), atol=1e-6
    )


def test_str_zero_filters_refuses_a_rate_in_one_sentence():
    with pytest.raises(ValueError, match=r"str_zero_filters.*takes no `rate` \(received rate=0.5\)"):
        tfprune.prune(_str_model(), "str_zero_filters", rate=0.5)


def test_prune_of_a_sparsified_model_with_another_criterion_strips_it_first():
    model = _str_model()
    pruned, _ = tfprune.prune(model, "l1", rate=0.5, round_to=1)
    stripped = tfprune.strip(model)
    assert pruned.get_layer("str_b").filters == 3  # floor(0.5 * 5) removed
    assert type(pruned.get_layer("str_b")) is keras.layers.Conv2D
    # The same widths as pruning the stripped model by hand, with the same weights.
    by_hand, _ = tfprune.prune(stripped, "l1", rate=0.5, round_to=1)
    for left, right in zip(pruned.get_weights(), by_hand.get_weights()):
        np.testing.assert_array_equal(left, right)


def test_graph_build_refuses_an_str_layer_saying_to_strip():
    with pytest.raises(ValueError, match=r"Layer 'str_a' \(STRConv2D\).*tfprune\.strip\(model\)"):
        tfprune.graph.build(_str_model())


def test_prune_low_magnitude_refuses_str_layers_unless_skipped():
    model = _str_model()
    with pytest.raises(ValueError, match=r"Layer 'str_a' \(STRConv2D\) is an STR layer.*tfprune\.strip\(model\)"):
        tfprune.prune_low_magnitude(model, tfprune.ConstantSparsity(0.5))
    wrapped = tfprune.prune_low_magnitude(tfprune.strip(model), tfprune.ConstantSparsity(0.5))
    assert len(tfprune.magnitude.pruning_wrappers(wrapped)) == 3
    # An STR layer left out with `skip` is kept as it is; the plain layers beside it are wrapped.
    inputs = keras.Input((6, 6, 2))
    x = tfprune.layers.STRConv2D(4, 1, name="str")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    mixed = keras.Model(inputs, keras.layers.Dense(3, name="plain")(x))
    wrapped = tfprune.prune_low_magnitude(mixed, tfprune.ConstantSparsity(0.5), skip=("str",))
    assert [layer.name for layer in tfprune.magnitude.pruning_wrappers(wrapped)] == ["plain"]
    assert isinstance(wrapped.get_layer("str"), tfprune.layers.STRConv2D)


def test_sensitivity_of_an_str_model_strips_it_as_prune_does():
    model = _str_model()
    x = _sample()
    reference = tfprune.strip(model).predict(x, verbose=0)

    def distance(candidate):
        return -float(np.abs(candidate.predict(x, verbose=0) - reference).mean())

    on_str = tfprune.sensitivity(model, (x, None), rates=(0.5,), evaluate=distance)
    on_stripped = tfprune.sensitivity(tfprune.strip(model), (x, None), rates=(0.5,), evaluate=distance)
    assert on_str.values == on_stripped.values and on_str.values
    assert on_str.baseline == on_stripped.baseline == 0.0


def test_cli_prunes_the_zero_filters_of_an_str_model_without_a_rate(tmp_path, capsys):
    source = tmp_path / "sparse.keras"
    _str_model().save(source)
    output = tmp_path / "small.keras"
    assert cli.main(["prune", str(source), "--criterion", "str_zero_filters", "--round-to", "1", "-o", str(output)]) == 0
    assert keras.saving.load_model(output).get_layer("str_a").filters == 2
    capsys.readouterr()
    assert cli.main(["prune", str(source), "--criterion", "l1", "-o", str(tmp_path / "other.keras")]) == 2
    assert "--rate is required with --criterion l1" in capsys.readouterr().err
