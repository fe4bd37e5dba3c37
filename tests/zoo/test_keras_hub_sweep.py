"""The keras-hub sweep as a test: every configuration prunes into a model that works, or is refused.

For each tiny configuration of `keras_hub_sweep.py` (decoder language
models aside: they have work of their own), `tfprune.prune(model, "l1",
rate=0.3)` either refuses with one `ValueError` whose message is one line,
or gives a model that runs on the configuration's sample, has fewer
parameters, reloads from `.keras` to 1e-6 and exports to LiteRT with a
verified error under 1e-4 (or is refused there in one line). A pruned model
that crashes when called or does not load back fails the test.

A handful of families the older zoo test does not cover run in `make test`;
the rest are `slow` (`make test-all`, or `python -m benchmarks.keras_hub_sweep`
for the table of outcomes).
"""

import warnings

import keras
import numpy as np
import pytest
from keras_hub_sweep import CONFIGURATIONS

import tfprune

keras_hub = pytest.importorskip("keras_hub", reason="install the `keras-hub` extra")

# Families outside tests/zoo/test_keras_hub_zoo.py, quick enough for CI.
IN_CI = ("DeiTBackbone", "CLIPVisionEncoder", "DeepLabV3ImageSegmenter", "ESM2Backbone",
         "DistilBertTextClassifier", "MobileNetV5Backbone")  # fmt: skip
NAMES = sorted(name for name, entry in CONFIGURATIONS.items() if entry.kind != "decoder")


def _outputs(model, inputs):
    return [keras.ops.convert_to_numpy(value) for value in keras.tree.flatten(model(inputs, training=False))]


def _one_line(message):
    return "\n" not in message.strip() and "Traceback" not in message


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=[] if name in IN_CI else [pytest.mark.slow]) for name in NAMES]
)
def test_every_configuration_prunes_into_a_working_model_or_is_refused_in_one_line(name, tmp_path):
    entry = CONFIGURATIONS[name]
    keras.utils.set_random_seed(0)
    model = entry.build(keras_hub)
    sample = entry.sample()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            small, result = tfprune.prune(model, "l1", **entry.prune_arguments(), verbose=0)
        except ValueError as refusal:
            assert _one_line(str(refusal)), str(refusal)
            return
    assert result.unchanged or small.count_params() < model.count_params()
    pruned = _outputs(small, sample)
    assert all(np.isfinite(value).all() for value in pruned)
    small.save(tmp_path / "small.keras")
    reloaded = _outputs(keras.models.load_model(tmp_path / "small.keras"), sample)
    for got, want in zip(reloaded, pruned):  # as numbers: MoonshineBackbone returns a boolean mask
        np.testing.assert_allclose(np.asarray(got, np.float64), np.asarray(want, np.float64), atol=1e-6, rtol=0)
    try:
        report = tfprune.export.to_tflite(small, tmp_path / "small.tflite", sample_inputs=sample, verbose=0)
    except ValueError as refusal:  # an operation LiteRT cannot represent: said in one line
        assert _one_line(str(refusal)) and "TFLite" in str(refusal), str(refusal)
        return
    assert report.max_abs_error < 1e-4, report


def test_the_sweep_covers_every_model_class_keras_hub_exports():
    from keras_hub_sweep import uncovered

    assert uncovered(keras_hub) == []
