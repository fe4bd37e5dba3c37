"""tfprune.latency: features exact where they count MACs and activations, fitting, files."""

import json

import keras
import numpy as np
import pytest

from tfprune import graph, latency, surgery
from tfprune.analysis import analyze


def _model():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", name="c1")(inputs)
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.Conv2D(24, 1, name="pw")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="fc")(x))


WIDTHS = [{"c1": 8, "pw": 24}, {"c1": 16, "pw": 8}, {"c1": 5, "pw": 17}, {"c1": 16, "pw": 24}]


def _features(model):
    return latency._Features.of(model, graph.build(model), ["c1", "pw"])


@pytest.mark.parametrize("widths", WIDTHS)
def test_mac_features_sum_to_the_pruned_models_macs(widths):
    model = _model()
    features = _features(model)
    predicted = features(latency._shares(features.costs.names, features.costs.sizes, widths))
    pruned = surgery.set_widths(model, widths)
    assert predicted[: len(latency.KINDS)].sum() * 1e6 == pytest.approx(
        analyze(pruned).macs, rel=1e-9
    )


@pytest.mark.parametrize("widths", WIDTHS)
def test_activation_features_count_what_each_kind_of_layer_writes(widths):
    model = _model()
    features = _features(model)
    predicted = dict(
        zip(
            latency.KINDS,
            features(latency._shares(features.costs.names, features.costs.sizes, widths))[4:] * 1e6,
        )
    )
    pruned = surgery.set_widths(model, widths)
    written = {kind: 0.0 for kind in latency.KINDS}
    for name, kind in (("c1", "conv"), ("dw", "depthwise"), ("pw", "pointwise")):
        written[kind] += float(np.prod(pruned.get_layer(name).output.shape[1:]))
    # The dense head's output is no group's: it is not a feature (a constant).
    for kind in ("conv", "depthwise", "pointwise"):
        assert predicted[kind] == pytest.approx(written[kind], rel=1e-9), kind


def test_fit_recovers_the_coefficients_that_made_the_times():
    model = _model()
    features = _features(model)
    truth = np.array([2.0, 0.5, 4.0, 0.0, 0.0, 3.0, 10.0, 0.0])
    sizes = {"c1": 16, "pw": 24}
    combinations = latency.sample_widths(sizes, 12, seed=1, round_to=1)
    measurements = [
        (
            widths,
            0.3
            + float(
                features(latency._shares(features.costs.names, features.costs.sizes, widths))
                @ truth
            ),
        )
        for widths in combinations
    ]
    fitted = latency.fit_latency_model(model, measurements)
    for widths, milliseconds in measurements:
        assert fitted.of_widths(widths) == pytest.approx(milliseconds, rel=1e-6)
    held_out = {"c1": 3, "pw": 20}
    expected = 0.3 + float(
        features(latency._shares(features.costs.names, features.costs.sizes, held_out)) @ truth
    )
    assert fitted.of_widths(held_out) == pytest.approx(expected, rel=1e-3)
    assert np.all(fitted.coefficients >= 0) and fitted.intercept >= 0


def test_sample_widths_spans_uniform_and_random_combinations():
    combinations = latency.sample_widths({"a": 64, "b": 128, "c": 4}, 9, seed=0)
    assert combinations[0] == {"a": 64, "b": 128, "c": 4}
    for widths in combinations:
        assert widths["c"] == 4  # not above round_to: kept whole
        assert all(width % 8 == 0 and 8 <= width for name, width in widths.items() if name != "c")
    uniform = combinations[1:3]
    assert [w["a"] / 64 for w in uniform] == pytest.approx(
        [w["b"] / 128 for w in uniform], abs=0.07
    )
    assert min(w["a"] for w in combinations) <= 24
    assert len({tuple(w.values()) for w in combinations}) >= 6


@pytest.mark.parametrize("samples, smallest", [(1, 0.25), ("3", 0.25), (3, 0.0), (3, 1.0)])
def test_sample_widths_refuses_bad_arguments(samples, smallest):
    with pytest.raises(ValueError, match="samples|smallest"):
        latency.sample_widths({"a": 8}, samples, smallest=smallest)


def test_fit_refuses_too_few_or_bad_times():
    model = _model()
    with pytest.raises(ValueError, match="at least 3"):
        latency.fit_latency_model(model, [({"c1": 8}, 1.0)])
    with pytest.raises(ValueError, match="positive numbers"):
        latency.fit_latency_model(model, [({"c1": 8}, 1.0), ({"c1": 16}, -1.0), ({"c1": 4}, 1.0)])


def test_unknown_group_is_named():
    model = _model()
    fitted = latency.fit_latency_model(model, [({"c1": w}, float(w)) for w in (4, 8, 16)])
    with pytest.raises(KeyError, match="'nope'"):
        fitted.of_widths({"nope": 3})


def test_save_and_load_round_trip(tmp_path):
    model = _model()
    fitted = latency.fit_latency_model(
        model,
        [
            ({"c1": w, "pw": p}, 0.1 * w + 0.05 * p)
            for w, p in ((4, 8), (8, 24), (16, 16), (16, 24))
        ],
    )
    path = tmp_path / "latency.json"
    fitted.save(path)
    loaded = latency.LatencyModel.load(path)
    for widths in WIDTHS:
        assert loaded.of_widths(widths) == fitted.of_widths(widths)
    assert loaded.names == fitted.names and loaded.threads == fitted.threads
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tfprune-")]
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="Not a tfprune latency model"):
        latency.LatencyModel.load(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="is not a tfprune latency model"):
        latency.LatencyModel.load(tmp_path / "broken.json")


def test_measure_times_litert_copies_and_predicts_them(tmp_path):
    pytest.importorskip("ai_edge_litert")
    model = _model()
    fitted = latency.measure_latency_model(model, samples=5, runs=10, warmup=2, directory=tmp_path)
    assert len(fitted.measurements) == 5 and fitted.measurements[0][1] > 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [sample["widths"] for sample in manifest["samples"]] == [
        widths for widths, _ in fitted.measurements
    ]
    assert all((tmp_path / sample["file"]).exists() for sample in manifest["samples"])
    assert "LiteRT" in fitted.runtime or "litert" in fitted.runtime
    # Least squares with an intercept: the mean prediction equals the mean time unless clipped at 0.
    predicted = [fitted.of_widths(widths) for widths, _ in fitted.measurements]
    assert np.mean(predicted) == pytest.approx(
        np.mean([ms for _, ms in fitted.measurements]), rel=0.25
    )


def test_write_samples_refuses_an_unknown_group(tmp_path):
    model = _model()
    with pytest.raises(ValueError, match="'nope' is not a channel group"):
        latency.write_latency_samples(model, tmp_path, groups=["nope"])


def test_docstring_examples_run():
    import doctest

    failures, attempted = doctest.testmod(latency)
    assert failures == 0 and attempted >= 8
