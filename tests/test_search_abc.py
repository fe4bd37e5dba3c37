"""Tests for the bee colony optimiser, the cost model and ABCPruner."""

import itertools

import keras
import numpy as np
import pytest
from matplotlib.figure import Figure

import tfprune
from tfprune.search import ABCPruner, CostModel, bee_colony
from tfprune.surgery import squeeze_excite_widths


def _quadratic(target):
    return lambda vector: -float(((np.array(vector) - target) ** 2).sum())


def _brute_force(fitness, choices, feasible):
    vectors = [vector for vector in itertools.product(*map(range, choices)) if feasible(vector)]
    return max(vectors, key=fitness)


def test_bee_colony_finds_the_constrained_optimum_and_respects_the_budget():
    fitness = _quadratic(np.array([5, 5, 1, 3]))
    feasible = lambda vector: sum(vector) <= 10  # noqa: E731
    calls = []

    def recorded(vector):
        calls.append(vector)
        return fitness(vector)

    optimum = _brute_force(fitness, (6,) * 4, feasible)
    assert optimum == (4, 4, 0, 2)  # the unconstrained optimum (5, 5, 1, 3) costs 14
    result = bee_colony(recorded, (6,) * 4, colony_size=8, cycles=25, feasible=feasible, seed=0)
    assert result.best == optimum and result.best_fitness == -4.0
    assert all(feasible(vector) for vector in calls)
    assert len(calls) == len(set(calls)) == result.evaluations  # cached: one call per vector
    assert len(result.history) == 26 and list(result.history) == sorted(result.history)


def test_bee_colony_fill_puts_every_vector_on_the_budget_boundary():
    fitness = _quadratic(np.array([5, 5, 1, 3]))
    costs = np.array([1, 2, 1, 3])
    feasible = lambda vector: float(costs @ np.array(vector)) <= 12  # noqa: E731
    calls = []

    def recorded(vector):
        calls.append(vector)
        return fitness(vector)

    result = bee_colony(recorded, (6,) * 4, colony_size=6, cycles=10, feasible=feasible, fill=True, seed=0)
    for vector in calls:
        assert feasible(vector)
        for entry in range(4):  # no entry can be raised without breaking the budget
            raised = list(vector)
            raised[entry] += 1
            assert raised[entry] > 5 or not feasible(raised)
    assert result.best == _brute_force(fitness, (6,) * 4, feasible)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bee_colony_reaches_a_concave_knapsack_optimum_within_two_percent(seed):
    values, costs = np.array([3, 5, 4, 7, 2, 6.0]), np.array([2, 4, 3, 5, 1, 4.0])
    fitness = lambda vector: float(values @ np.sqrt(vector))  # noqa: E731
    feasible = lambda vector: float(costs @ np.array(vector)) <= 30  # noqa: E731
    optimum = fitness(_brute_force(fitness, (5,) * 6, feasible))
    result = bee_colony(fitness, (5,) * 6, colony_size=10, cycles=30, changes=2, feasible=feasible, seed=seed)
    assert feasible(result.best)
    assert result.best_fitness >= 0.98 * optimum


def test_bee_colony_is_deterministic_under_a_seed():
    fitness = _quadratic(np.array([1, 3, 2]))
    first = bee_colony(fitness, (4, 4, 4), colony_size=4, cycles=3, seed=7)
    second = bee_colony(fitness, (4, 4, 4), colony_size=4, cycles=3, seed=7)
    assert first == second


def test_bee_colony_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"`choices` must be a non-empty.*Received: choices=\[\]"):
        bee_colony(sum, ())
    with pytest.raises(ValueError, match="`colony_size` must be an int >= 2. Received: colony_size=1"):
        bee_colony(sum, (3,), colony_size=1)
    with pytest.raises(ValueError, match="No vector is feasible"):
        bee_colony(sum, (3, 3), feasible=lambda vector: False)


def _small_model():
    inputs = keras.Input((8, 8, 3))
    hidden = keras.layers.Conv2D(8, 3, padding="same", name="conv_a")(inputs)
    hidden = keras.layers.BatchNormalization(name="bn_a")(hidden)
    hidden = keras.layers.ReLU()(hidden)
    hidden = keras.layers.Conv2D(6, 1, name="conv_b")(hidden)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    outputs = keras.layers.Dense(4, name="logits")(hidden)
    return keras.Model(inputs, outputs)


def _small_data(count=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((count, 8, 8, 3), dtype=np.float32), rng.integers(0, 4, count).astype("int32")


def test_cost_model_matches_hand_counts():
    model = _small_model()
    graph = tfprune.graph.build(model)
    macs = CostModel(model, graph, ["conv_a", "conv_b"])
    params = CostModel(model, graph, ["conv_a", "conv_b"], cost="params")

    def hand_macs(width_a, width_b):  # 64 positions; 3x3x3 then 1x1xwidth_a kernels; dense
        return 64 * 9 * 3 * width_a + 64 * width_a * width_b + width_b * 4

    def hand_params(width_a, width_b):
        return (27 * width_a + width_a) + 4 * width_a + (width_a * width_b + width_b) + (width_b * 4 + 4)

    assert macs.total == hand_macs(8, 6) == tfprune.analyze(model).macs
    assert params.total == hand_params(8, 6) == tfprune.analyze(model).params
    assert macs.of_widths({"conv_a": 4, "conv_b": 3}) == hand_macs(4, 3)
    assert params.of_widths({"conv_a": 4, "conv_b": 3}) == hand_params(4, 3)
    assert macs(np.array([0.5, 0.5])) == hand_macs(4, 3)
    same = CostModel.from_config(macs.get_config())
    assert same.of_widths({"conv_b": 2}) == macs.of_widths({"conv_b": 2})
    with pytest.raises(ValueError, match="`cost` must be one of.*Received: cost='flops'"):
        CostModel(model, graph, ["conv_a"], cost="flops")


def test_cost_model_counts_a_product_of_two_activations_as_a_fixed_cost():
    # `keras.ops.matmul` is counted by `analyze` but is no layer: its MACs do not shrink here.
    inputs = keras.Input((3, 4))
    left = keras.layers.Dense(6, name="left")(inputs)
    right = keras.ops.transpose(keras.layers.Dense(6, name="right")(inputs), (0, 2, 1))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(keras.ops.matmul(left, right)))
    graph = tfprune.graph.build(model)
    macs = CostModel(model, graph, [group.name for group in graph.groups if group.prunable])
    assert macs.total == tfprune.analyze(model).macs == 3 * 4 * 6 * 2 + 3 * 6 * 3 + 3 * 3 * 2


def test_cost_model_is_exact_for_surgery_on_mobilenet_v3():
    model = tfprune.models.mobilenet_v3("small", input_shape=(32, 32, 3), classes=10, seed=0)
    graph = tfprune.graph.build(model)
    names = [group.name for group in graph.groups if group.prunable]
    rng = np.random.default_rng(3)
    widths = {name: int(rng.integers(1, graph[name].size + 1)) for name in names}
    pruned = tfprune.analyze(tfprune.surgery.set_widths(model, widths))
    assert CostModel(model, graph, names).of_widths(widths) == pruned.macs
    assert CostModel(model, graph, names, cost="params").of_widths(widths) == pruned.params
    # targets="expansion": squeeze-excite bottlenecks follow with surgery's keep_ratio rule
    expansion = {name: graph[name].size // 3 for name in tfprune.pruning.expansion_layers(model)}
    with_bottlenecks = squeeze_excite_widths(graph, expansion)
    assert with_bottlenecks["expanded_conv_3_squeeze_excite_conv"] == 8  # se_bottleneck_width(32)
    pruned = tfprune.surgery.set_widths(model, expansion, se_policy="keep_ratio")
    costs = CostModel(model, graph, list(with_bottlenecks))
    assert costs.of_widths(with_bottlenecks) == tfprune.analyze(pruned).macs


def _pruner(model, **kwargs):
    settings = dict(budget=0.5, colony_size=3, cycles=2, finetune_steps=2, batch_size=16, verbose=0)
    settings.update(kwargs)
    return ABCPruner(model, _small_data(), **settings)


def _compiled_small_model():
    model = _small_model()
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_abc_pruner_respects_the_budget_is_deterministic_and_leaves_the_model_alone():
    model = _compiled_small_model()
    weights = [value.copy() for value in model.get_weights()]
    result = _pruner(model).search()
    again = _pruner(model).search()
    assert result.widths == again.widths and result.fitness == again.fitness
    assert result.macs_after <= 0.5 * result.macs_before
    assert result.macs_after == tfprune.analyze(result.model).macs
    assert result.widths["conv_a"] == result.model.get_layer("conv_a").filters
    assert len(result.history["best_fitness"]) == 3
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))
    assert isinstance(result.plot(), Figure)


def test_abc_params_budget():
    result = _pruner(_compiled_small_model(), budget=0.4, cost="params", cycles=1).search()
    assert result.params_after <= 0.4 * result.params_before


def test_abc_masked_copy_computes_what_surgery_builds():
    model = _compiled_small_model()
    model.fit(*_small_data(), epochs=1, verbose=0)  # non-trivial BN statistics
    pruner = _pruner(model)
    vector = [1, 2]
    widths, candidate = pruner.build(vector)
    pruner.masks.set_widths([widths[name] for name in pruner.costs.names])
    images = _small_data(8, seed=1)[0]
    np.testing.assert_allclose(
        pruner.masked_model(images, training=False), candidate(images, training=False), atol=1e-5
    )
    # the fitness fine-tune starts from the model's own weights every time
    assert pruner.fitness(vector) == pruner.fitness(vector)


def test_abc_pruner_errors():
    model = _compiled_small_model()
    with pytest.raises(ValueError, match=r"`candidates` must be a non-empty.*Received: candidates=\(\)"):
        _pruner(model, candidates=())
    with pytest.raises(ValueError, match=r"Received: candidates=\(0.5, 1.5\)"):
        _pruner(model, candidates=(0.5, 1.5))
    # smallest candidates: conv_a 4 of 8, conv_b 3 of 6 -> 7692 of 16920 MACs
    with pytest.raises(ValueError, match=r"`budget`=0.01 is unreachable: .* still keep 0\.455 of the model's MACs"):
        _pruner(model, budget=0.01, candidates=(0.5, 1.0))
    with pytest.raises(ValueError, match=r"`budget` is the share.*Received: budget=1.5"):
        _pruner(model, budget=1.5)
    with pytest.raises(ValueError, match="model '.*' is not compiled"):
        _pruner(_small_model())
    with pytest.raises(TypeError, match="`data` must be a tuple"):
        ABCPruner(model, np.zeros((4, 8, 8, 3)))
