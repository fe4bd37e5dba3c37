"""Tests for tfprune's pruning schedules (closed forms, serialization, bad arguments)."""

import keras
import pytest

import tfprune
from tfprune.magnitude import PruningSchedule


def test_polynomial_decay_follows_zhu_gupta_closed_form():
    schedule = tfprune.PolynomialDecay(0.2, 0.9, begin_step=100, end_step=300, power=3)
    for step in (100, 150, 200, 299, 300):
        progress = (step - 100) / 200
        assert schedule.sparsity(step) == pytest.approx(0.9 + (0.2 - 0.9) * (1 - progress) ** 3)
    assert schedule.sparsity(0) == pytest.approx(0.2)  # before begin: initial
    assert schedule.sparsity(10_000) == pytest.approx(0.9)  # after end: final


def test_pruning_steps_are_begin_every_frequency_and_end():
    schedule = tfprune.PolynomialDecay(0.0, 0.5, begin_step=10, end_step=35, frequency=10)
    pruned_at = [step for step in range(60) if schedule.should_prune(step)]
    assert pruned_at == [10, 20, 30, 35]
    assert schedule(35) == (True, pytest.approx(0.5))


def test_constant_sparsity_without_end_prunes_forever():
    schedule = tfprune.ConstantSparsity(0.3, begin_step=5, frequency=7)
    assert [step for step in range(30) if schedule.should_prune(step)] == [5, 12, 19, 26]
    assert schedule.should_prune(5 + 7 * 1000)
    assert schedule.sparsity(0) == 0.3


@pytest.mark.parametrize(
    "schedule",
    [
        tfprune.ConstantSparsity(0.5, begin_step=3, end_step=30, frequency=4),
        tfprune.PolynomialDecay(0.1, 0.8, begin_step=0, end_step=90, power=2, frequency=9),
    ],
)
def test_schedules_serialize_with_keras(schedule):
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert type(restored) is type(schedule)
    assert restored.get_config() == schedule.get_config()
    assert [restored(step) for step in range(100)] == [schedule(step) for step in range(100)]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: tfprune.ConstantSparsity(1.0), r"target_sparsity.*\[0, 1\).*Received: target_sparsity=1\.0"),
        (lambda: tfprune.ConstantSparsity(-0.1), r"Received: target_sparsity=-0\.1"),
        (lambda: tfprune.PolynomialDecay(0.0, 1.5, 0, 10), r"Received: final_sparsity=1\.5"),
        (lambda: tfprune.PolynomialDecay(-1, 0.5, 0, 10), r"Received: initial_sparsity=-1"),
        (lambda: tfprune.ConstantSparsity(0.5, begin_step=10, end_step=5), r"end_step.*begin_step=10, end_step=5"),
        (lambda: tfprune.PolynomialDecay(0.0, 0.5, 10, 10), r"later than `begin_step`.*end_step=10"),
        (lambda: tfprune.PolynomialDecay(0.0, 0.5, 0, 10, power=0), r"Received: power=0"),
        (lambda: tfprune.ConstantSparsity(0.5, frequency=0), r"frequency.*Received: frequency=0"),
        (lambda: tfprune.ConstantSparsity(0.5, begin_step=-1), r"Received: begin_step=-1"),
        (lambda: tfprune.ConstantSparsity(0.5, begin_step=1.5), r"Received: begin_step=1\.5"),
    ],
)
def test_bad_schedule_arguments_raise_clear_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_base_schedule_needs_a_sparsity():
    with pytest.raises(NotImplementedError, match="PruningSchedule must implement"):
        PruningSchedule().sparsity(0)


@pytest.mark.parametrize(
    "module_name",
    [
        "tfprune.magnitude.schedules",
        "tfprune.magnitude.masks",
        "tfprune.magnitude.wrapper",
        "tfprune.magnitude.prune",
        "tfprune.magnitude.m_by_n",
        "tfprune.callbacks.pruning_step",
    ],
)
def test_docstring_examples_run(module_name):
    import doctest
    import importlib

    results = doctest.testmod(importlib.import_module(module_name), optionflags=doctest.ELLIPSIS)
    assert results.attempted > 0 and results.failed == 0
