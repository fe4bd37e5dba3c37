import keras
import numpy as np
import pytest

import tfprune


def test_layer_sparsity_bars_equal_the_report(tmp_path):
    inputs = keras.Input((8,))
    hidden = tfprune.layers.STRDense(6, s_init=-10.0, name="hidden")(inputs)
    model = keras.Model(inputs, tfprune.layers.STRDense(3, s_init=-10.0, name="logits")(hidden))
    weights = model.get_layer("hidden").get_weights()  # kernel W first, then bias and s
    weights[0][:4] = 0.0  # 4 of 8 rows: half the weights are exactly zero
    model.get_layer("hidden").set_weights(weights)
    report = tfprune.sparsity_report(model)
    path = tmp_path / "sparsity.png"
    figure = tfprune.plots.layer_sparsity(report, path=path)
    heights = [patch.get_height() for patch in figure.axes[0].patches]
    np.testing.assert_allclose(heights, [50.0, 0.0])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_layer_sparsity_refuses_an_empty_report():
    report = tfprune.sparsity.SparsityReport(layers=[], parameters=0, nonzero_parameters=0, macs=0, nonzero_macs=0)
    with pytest.raises(ValueError, match="no STR layers"):
        tfprune.plots.layer_sparsity(report)
