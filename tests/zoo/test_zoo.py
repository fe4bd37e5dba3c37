"""The keras.applications zoo: prune ~30% of every prunable group, for real.

Each model (random weights, small input) gets about 30% of the channels of
every prunable group removed at random. Those channels are first made dead
(producer filters, BN shifts and means zeroed), so the pruned model must
compute the same outputs; it must also have fewer parameters, keep its output
shape, reload from `.keras` and convert to TFLite. Then every
keras.applications model is pruned by `tfprune.prune` with default arguments.
Only MobileNetV3 and ResNet50 run in CI; the rest are `slow`.
"""

import keras
import numpy as np
import pytest
from surgery_helpers import kill_channels

import tfprune

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
    pytest.param("InceptionResNetV2", applications.InceptionResNetV2, {}, 75, marks=slow),
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


@slow
def test_convnext_is_inlined_and_its_layer_scale_sliced(tmp_path):
    model = applications.ConvNeXtTiny(input_shape=(32, 32, 3), weights=None, classes=10)
    with pytest.raises(ValueError, match=r"Model 'convnext_tiny_stem' is nested inside the model"):
        tfprune.graph.build(model)  # the graph alone refuses; prune inlines
    flat = tfprune.graph.flatten(model)
    graph = tfprune.graph.build(flat)
    small = tfprune.surgery.remove_channels(flat, random_removals(graph, np.random.default_rng(0)))
    # LayerScale sits on each stage's residual stream, which LayerNormalization freezes: only
    # the MLP widths shrink, and the LayerScale layers come through unchanged (their resizing
    # is checked by the dead-channel audit in tests/test_channel_coupling.py).
    scales = [layer for layer in small.layers if type(layer).__name__ == "LayerScale"]
    assert scales and all(
        layer.projection_dim == flat.get_layer(layer.name).projection_dim == layer.gamma.shape[0] for layer in scales
    )
    x = np.random.default_rng(1).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    # LayerNormalization statistics change when channels go: no equivalence here.
    check_pruned(flat, small, x, tmp_path, equivalent=False)


# Every keras.applications constructor: (name, options, smallest input size that builds).
# Only the first two run in CI; the others are `slow` (make test-all).
ALL_APPLICATIONS = [
    ("MobileNetV3Small", {}, 32, False),
    ("ResNet50", {}, 32, False),
] + [
    (name, options, size, True)
    for name, options, size in [
        ("MobileNetV3Large", {}, 32), ("MobileNet", {}, 32), ("MobileNetV2", {}, 32),
        ("ResNet101", {}, 32), ("ResNet152", {}, 32), ("ResNet50V2", {}, 32), ("ResNet101V2", {}, 32),
        ("ResNet152V2", {}, 32), ("VGG16", {}, 32), ("VGG19", {}, 32), ("Xception", {}, 71),
        ("InceptionV3", {}, 75), ("InceptionResNetV2", {}, 75), ("DenseNet121", {}, 32),
        ("DenseNet169", {}, 32), ("DenseNet201", {}, 32), ("NASNetMobile", {}, 32), ("NASNetLarge", {}, 32),
        ("EfficientNetB0", {}, 32), ("EfficientNetB1", {}, 32), ("EfficientNetB2", {}, 32),
        ("EfficientNetB3", {}, 32), ("EfficientNetB4", {}, 32), ("EfficientNetB5", {}, 32),
        ("EfficientNetB6", {}, 32), ("EfficientNetB7", {}, 32), ("EfficientNetV2B0", {}, 32),
        ("EfficientNetV2B1", {}, 32), ("EfficientNetV2B2", {}, 32), ("EfficientNetV2B3", {}, 32),
        ("EfficientNetV2S", {}, 32), ("EfficientNetV2M", {}, 32), ("EfficientNetV2L", {}, 32),
        ("ConvNeXtTiny", {}, 32), ("ConvNeXtSmall", {}, 32), ("ConvNeXtBase", {}, 32),
        ("ConvNeXtLarge", {}, 32), ("ConvNeXtXLarge", {}, 32),
    ]
]  # fmt: skip


@pytest.mark.parametrize(
    "name, options, size",
    [pytest.param(name, options, size, marks=[slow] if is_slow else [], id=name)
     for name, options, size, is_slow in ALL_APPLICATIONS],
)  # fmt: skip
def test_default_prune_keeps_every_group_and_the_model_alive(name, options, size, tmp_path):
    """`prune(model, "l1", rate=0.3)` with default arguments: no group at its guard, outputs still vary."""
    # Logits: a random network's softmax saturates to the same one-hot answer for every input.
    model = getattr(applications, name)(
        input_shape=(size, size, 3), weights=None, classes=10, classifier_activation=None, **options
    )
    small, result = tfprune.prune(model, "l1", rate=0.3)
    assert result.scope == "group"
    assert result.groups and not [group.name for group in result.groups if group.guarded]
    assert all(group.after >= round(0.7 * group.before) - 1 for group in result.groups)
    x = np.random.default_rng(0).uniform(0, 255, (8, size, size, 3)).astype("float32")
    # Variation across inputs relative to the outputs' size: a destroyed network answers
    # every input alike (0). Relative, because a BN-free random network with fewer channels
    # has smaller outputs everywhere (VGG19: std 1.0e-3 -> 9.2e-5, relative 0.11 -> 0.19).
    before, after = (
        outputs.std(axis=0).max() / np.abs(outputs).mean() for outputs in (np.asarray(model(x)), np.asarray(small(x)))
    )
    assert after > 0.1 * before > 0, (before, after)
    small.save(tmp_path / "small.keras")
    reloaded = keras.models.load_model(tmp_path / "small.keras")
    np.testing.assert_allclose(reloaded(x), small(x), atol=1e-6, rtol=0)
    report = tfprune.export.to_tflite(small, tmp_path / "small.tflite", sample_inputs=x)
    assert report.max_abs_error < 1e-4 * max(1.0, float(np.abs(small(x)).max()))
