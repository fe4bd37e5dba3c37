"""prune(..., latency=...): the rate is chosen to meet a LiteRT latency budget."""

import keras
import numpy as np
import pytest

import tfprune
from tfprune import _pruning_latency, latency


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(32, 3, padding="same", name="c1")(inputs)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(48, 3, padding="same", name="c2")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(64, 1, name="pw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="fc")(x))


def _table(model, coefficients=(1.0, 2.0, 3.0, 0.5, 0.0, 0.0, 0.0, 0.0), intercept=0.2):
    """A latency model whose times are a known function of the MACs: as if measured."""
    features = latency._Features.of(model, tfprune.graph.build(model), ["c1", "c2", "pw"])
    return latency.LatencyModel(features, np.array(coefficients), intercept, threads=1, runtime="synthetic")


@pytest.mark.parametrize("share", [0.9, 0.6, 0.4])
def test_the_chosen_widths_are_predicted_at_the_budget_and_a_smaller_rate_is_over_it(share):
    model = _model()
    table = _table(model)
    pruned, result = tfprune.prune(model, "l1", latency=share, latency_model=table, round_to=1)
    widths = {name: pruned.get_layer(name).filters for name in table.names}
    predicted = table.of_widths(widths)
    target = share * table.total
    assert result.latency["target_ms"] == pytest.approx(target)
    assert result.latency["predicted_ms"] == pytest.approx(predicted, rel=1e-9)
    assert predicted <= target
    # The next channel back would be over: the rate just below the chosen one misses the budget.
    _, looser = tfprune.prune(model, "l1", rate=max(result.rate - 0.02, 0.0), round_to=1)
    looser_widths = {group.name: group.after for group in looser.groups}
    assert table.of_widths(looser_widths) > target
    assert result.latency["measured_ms"] is None  # a table from elsewhere: nothing timed here
    assert "latency (LiteRT, 1 thread): target" in str(result)


def test_milliseconds_budget_with_a_table():
    model = _model()
    table = _table(model)
    target = 0.5 * table.total
    _, result = tfprune.prune(model, "l1", latency=f"{target:.6f}ms", latency_model=table)
    assert result.latency["predicted_ms"] <= target + 1e-6
    assert result.latency["target_ms"] == pytest.approx(target, rel=1e-6)


def test_same_widths_as_the_rate_it_chose():
    model = _model()
    pruned, result = tfprune.prune(model, "l1", latency=0.5, latency_model=_table(model))
    again, _ = tfprune.prune(model, "l1", rate=result.rate)
    assert [layer.get_config() for layer in pruned.layers] == [layer.get_config() for layer in again.layers]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(latency=0.5, rate=0.3), "not both"),
        (dict(latency=0.0), r"share of the dense model's latency in \(0, 1\]"),
        (dict(latency=1.5), r"in \(0, 1\]"),
        (dict(latency="8 seconds"), "written like '8ms'"),
        (dict(latency="8ms"), "pass the `latency_model` measured on it"),
        (dict(latency_model="table"), None),
    ],
)
def test_bad_latency_arguments_are_refused_in_one_sentence(arguments, message):
    model = _model()
    if message is None:
        with pytest.raises(TypeError, match="must be a tfprune.latency.LatencyModel"):
            tfprune.prune(model, "l1", **arguments)
        return
    with pytest.raises(ValueError, match=message):
        tfprune.prune(model, "l1", **arguments)


def test_a_latency_model_without_latency_is_refused():
    model = _model()
    with pytest.raises(ValueError, match="pass `latency=`"):
        tfprune.prune(model, "l1", rate=0.3, latency_model=_table(model))


def test_a_table_missing_a_targeted_group_is_refused():
    model = _model()
    features = latency._Features.of(model, tfprune.graph.build(model), ["c1"])
    table = latency.LatencyModel(features, np.ones(8), 0.1)
    with pytest.raises(ValueError, match=r"does not cover group\(s\) \['c2', 'pw'\]"):
        tfprune.prune(model, "l1", latency=0.5, latency_model=table)


def test_an_unreachable_budget_says_what_is_left():
    model = _model()
    table = _table(model, intercept=100.0)  # the untouched layers dominate
    with pytest.raises(ValueError, match="unreachable by pruning the targeted groups"):
        tfprune.prune(model, "l1", latency=0.3, latency_model=table)


def test_rate_for_latency_treats_refused_rates_as_over_the_budget():
    class Line:
        total = 10.0

        def of_widths(self, widths):
            return 10 - 8 * widths["r"]

    def widths_at(rate):
        return None if rate > 0.7 else {"r": rate}

    rate, predicted = _pruning_latency.rate_for_latency(widths_at, Line(), 6.0)
    assert rate == pytest.approx(0.5, abs=1e-6) and predicted <= 6.0
    with pytest.raises(ValueError, match="unreachable"):
        _pruning_latency.rate_for_latency(widths_at, Line(), 2.0)


def test_budget_timed_here_reports_the_measured_latency(monkeypatch):
    pytest.importorskip("ai_edge_litert")
    original = latency.measure_latency_model
    calls = []

    def few_samples(model, **kwargs):
        calls.append(kwargs.get("groups"))
        return original(model, samples=5, runs=5, warmup=1, **kwargs)

    monkeypatch.setattr(latency, "measure_latency_model", few_samples)
    model = _model()
    _, result = tfprune.prune(model, "l1", latency=0.7)
    assert calls == [["c1", "c2", "pw"]]
    report = result.latency
    assert report["measured_ms"] > 0 and report["dense_measured_ms"] > 0
    assert report["prediction_error"] == pytest.approx(report["predicted_ms"] / report["measured_ms"] - 1)
    assert report["measured_share"] == pytest.approx(report["measured_ms"] / report["dense_measured_ms"])
    assert result.to_dict()["latency"]["threads"] == 1


def test_docstring_examples_run():
    import doctest

    failures, attempted = doctest.testmod(_pruning_latency)
    assert failures == 0 and attempted >= 4
