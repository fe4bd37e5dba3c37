"""The modules split out of `tfprune.handlers` and `tfprune.handlers_decoders`: their docstring examples run."""

import doctest
import importlib

import keras
import pytest

import tfprune


@pytest.mark.parametrize(
    "module_name",
    [
        "tfprune.tracer",
        "tfprune.handlers_base",
        "tfprune.handlers_sizes",
        "tfprune.handlers_decoders",
    ],
)
def test_docstring_examples_run(module_name):
    module = importlib.import_module(module_name)
    results = doctest.testmod(
        module, extraglobs={"tfprune": tfprune, "keras": keras}, optionflags=doctest.ELLIPSIS
    )
    assert results.attempted and not results.failed


def test_the_tracer_reads_back_what_handlers_wrote():
    tracer = tfprune.graph.Tracer()
    first = tracer.new_channels(3, "a")
    second = tracer.new_channels(3, "b")
    tracer.couple(first, second)
    tracer.pin(first[:1], "a reason")
    tracer.mark_heads(second[1:2], "attention")
    tracer.mark_gates(second[2:])
    tracer.normalize(first, "norm")
    assert tracer.channel_count == 6
    assert [tracer.root(channel) for channel in range(6)] == [0, 1, 2, 0, 1, 2]
    assert tracer.segments == [(0, 3, "a"), (3, 3, "b")]
    assert tracer.pins == {0: "a reason"}
    assert tracer.heads == {4: "attention"} and tracer.gates == {5}
    assert tracer.normalized == {0: ["norm"], 1: ["norm"], 2: ["norm"]}
    inputs = keras.Input((3,))
    tracer.record(inputs, second)
    assert tracer.channels(inputs).tolist() == [3, 4, 5]
    dense = keras.layers.Dense(3)
    dense.build((None, 3))
    tracer.use(dense, dense.kernel, 0, first, "input")
    ((key, (role, channels, path)),) = tracer.uses.items()
    assert key == (dense.name, 0, 0) and role == "input" and channels.tolist() == [0, 1, 2]
