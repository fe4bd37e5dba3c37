"""The keras.applications zoo: prune ~30% of every prunable group, for real.

Each model (random weights, small input) gets about 30% of the channels of
every prunable group removed at random. Those channels are first made dead
(producer filters, BN shifts and means zeroed), so the pruned model must
compute the same outputs; it must also have fewer parameters, keep its output
shape, reload from `.keras` and convert to TFLite. ConvNeXt is refused (a
nested model, then its LayerScale layer) until flattened and taught with a
user handler. Only MobileNetV3 and ResNet50 run in CI; the rest are `slow`.
"""

import keras
import numpy as np
import pytest
from surgery_helpers import kill_channels

import tfprune
from tfprune import handlers

applications = keras.applications
slow = pytest.mark.slow
FRACTION = 0.3

SUPPORTED = [
    pytest.param("MobileNetV3Small", applications.MobileNetV3Small, {}, 32),
    pytest.param("MobileNetV3Large", applications.MobileNetV3Large, {}, 32),
    pytest.param("ResNet50", applications.ResNet50, {}, 32),
    pytest.param("MobileNetV3LargeMinimalistic", applications.MobileNetV3Large, {"minimalistic": True}, 32,
                 marks=slow),
    pytest.param("MobileNet", applications.MobileNet, {}, 32, marks=slow),
    pytest.param("MobileNetV2", applications.MobileNetV2, {}, 32, marks=slow),
    pytest.param("ResNet50V2", applications.ResNet50V2, {}, 32, marks=slow),
    pytest.param("EfficientNetB0", applications.EfficientNetB0, {}, 32, marks=slow),
    pytest.param("EfficientNetV2B0", applications.EfficientNetV2B0, {}, 32, marks=slow),
    pytest.param("DenseNet121", applications.DenseNet121, {}, 32, marks=slow),
    pytest.param("VGG16", applications.VGG16, {}, 32, marks=slow),
    pytest.param("Xception", applications.Xception, {}, 71, marks=slow),
    pytest.param("InceptionV3", applications.InceptionV3, {}, 75, marks=slow),
    pytest.param("NASNetMobile", applications.NASNetMobile, {}, 32, marks=slow),
]


def random_removals(graph, rng):
    removals = {}
    for group in graph.groups:
        count = int(round(FRACTION * group.size))
        if group.prunable and 0 < count < group.size:
            removals[group.name] = np.sort(rng.choice(group.size, count, replace=False))
    return removals


def run_tflite(model, path, x):
    from ai_edge_litert.interpreter import Interpreter

    model.export(str(path), format="litert", verbose=False)
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def check_pruned(model, small, x, tmp_path, equivalent=True):
    """Runs, shrinks, keeps the output shape, reloads from .keras, converts to TFLite."""
    expected = model(x)
    pruned = small(x)
    assert small.output_shape == model.output_shape
    assert small.count_params() < 0.8 * model.count_params()
    if equivalent:
        np.testing.assert_allclose(pruned, expected, atol=1e-5, rtol=0)
    small.save(tmp_path / "small.keras")
    reloaded = keras.models.load_model(tmp_path / "small.keras")
    np.testing.assert_allclose(reloaded(x), pruned, atol=1e-6, rtol=0)
    np.testing.assert_allclose(run_tflite(small, tmp_path / "small.tflite", x), pruned, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name, constructor, options, size", SUPPORTED)
def test_zoo_model_is_pruned_rebuilt_saved_and_converted(name, constructor, options, size, tmp_path):
    model = constructor(input_shape=(size, size, 3), weights=None, classes=10, **options)
    graph = tfprune.graph.build(model)
    rng = np.random.default_rng(0)
    removals = random_removals(graph, rng)
    assert len(removals) >= 0.8 * sum(group.prunable for group in graph.groups)
    for group_name, channels in removals.items():
        kill_channels(model, graph[group_name], channels)
    small = tfprune.surgery.remove_channels(model, removals)
    x = rng.uniform(0, 255, (1, size, size, 3)).astype("float32")
    check_pruned(model, small, x, tmp_path)


class LayerScaleHandler(tfprune.graph.Handler):
    """What a user registers for ConvNeXt's LayerScale: one `gamma` per channel."""

    def trace(self, node, tracer):
        channels = tracer.channels(node.input_tensors[0])
        tracer.use(node.operation, node.operation.gamma, 0, channels, "param")
        return [channels]


@slow
def test_convnext_needs_flatten_and_a_user_handler_then_prunes(tmp_path):
    # No public name exists for ConvNeXt's LayerScale layer.
    from keras.src.applications.convnext import LayerScale

    model = applications.ConvNeXtTiny(input_shape=(32, 32, 3), weights=None, classes=10)
    with pytest.raises(ValueError, match=r"Model 'convnext_tiny_stem' is nested inside the model"):
        tfprune.graph.build(model)
    flat = tfprune.graph.flatten(model)
    with pytest.raises(ValueError, match=r"no channel handler for operation '\w+_layer_scale' of type .*LayerScale"):
        tfprune.graph.build(flat)
    tfprune.graph.register_handler(LayerScale, LayerScaleHandler())
    try:
        graph = tfprune.graph.build(flat)
        small = tfprune.surgery.remove_channels(flat, random_removals(graph, np.random.default_rng(0)))
    finally:
        handlers._HANDLERS.pop(LayerScale)
    x = np.random.default_rng(1).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    # LayerNormalization statistics change when channels go: no equivalence here.
    check_pruned(flat, small, x, tmp_path, equivalent=False)
