import os

import keras
import numpy as np
import pytest
from matplotlib.figure import Figure

from tfprune import plots
from tfprune.pruning import SensitivityResult

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _bn_model(gamma):
    inputs = keras.Input((3,))
    x = keras.layers.Dense(len(gamma))(inputs)
    bn = keras.layers.BatchNormalization()
    model = keras.Model(inputs, bn(x))
    bn.gamma.assign(np.asarray(gamma, "float32"))
    return model


def test_gamma_distribution_counts_every_gamma_of_models_and_arrays(tmp_path):
    path = tmp_path / "gamma.png"
    figure = plots.gamma_distribution(
        {"l1=0": _bn_model([1.0, -0.5, 0.9]), "l1=1e-4": np.array([0.0, 0.01, 0.02, -1.0])},
        path=path,
        bins=4,
    )
    assert isinstance(figure, Figure)
    assert path.read_bytes()[:8] == PNG_MAGIC
    axes = figure.axes[0]
    # one step histogram per run; the bins cover [0, max |γ| = 1] in 4 steps
    first, second = axes.patches
    assert [text.get_text() for text in axes.get_legend().get_texts()] == ["l1=0", "l1=1e-4"]
    counts = lambda patch: patch.get_xy()[1:-1:2, 1]  # noqa: E731  the step outline's heights
    # edges 0, 0.25, 0.5, 0.75, 1: |γ| = 0.5 is in [0.5, 0.75), 0.9 and 1 in the last bin
    np.testing.assert_array_equal(counts(first), [0, 0, 1, 2])
    np.testing.assert_array_equal(counts(second), [3, 0, 0, 1])


def test_widths_bars_match_the_result_and_missing_groups_keep_their_width():
    figure = plots.widths({"a": 64, "b": 72, "c": 16}, {"a": 30, "b": 41})
    heights = [patch.get_height() for patch in figure.axes[0].patches]
    assert heights == [64, 72, 16, 30, 41, 16]


def test_widths_accepts_a_prune_result_like_object():
    class Result:
        widths_before = {"a": 8}
        widths_after = {"a": 3}

    heights = [patch.get_height() for patch in plots.widths(Result()).axes[0].patches]
    assert heights == [8, 3]


def test_accuracy_vs_rate_lines_and_baseline(tmp_path):
    figure = plots.accuracy_vs_rate(
        {"l1": ([0.3, 0.5], [0.95, 0.93]), "random": ([0.3, 0.5], [0.9, 0.8])},
        baseline=0.96,
        path=tmp_path / "accuracy.png",
    )
    lines = figure.axes[0].lines
    assert list(lines[0].get_ydata()) == [0.95, 0.93]
    assert list(lines[1].get_xdata()) == [0.3, 0.5]
    assert list(lines[2].get_ydata()) == [0.96, 0.96]
    assert (tmp_path / "accuracy.png").read_bytes()[:8] == PNG_MAGIC


def test_sensitivity_plot_has_one_line_per_group():
    result = SensitivityResult("accuracy", 0.9, (0.25, 0.5), {"a": (0.9, 0.5), "b": (0.88, 0.87)})
    lines = plots.sensitivity(result).axes[0].lines
    assert [list(line.get_ydata()) for line in lines[:2]] == [[0.9, 0.5], [0.88, 0.87]]


def test_existing_file_survives_a_failed_write(tmp_path):
    path = tmp_path / "keep.png"
    path.write_bytes(b"old")
    with pytest.raises(ValueError, match=r"Curve 'l1' has 2 rates but 1 values"):
        plots.accuracy_vs_rate({"l1": ([0.1, 0.2], [0.5])}, path=path)
    assert path.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["keep.png"]


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r"`gammas` is empty"):
        plots.gamma_distribution({})
    inputs = keras.Input((3,))
    dense_only = keras.Model(inputs, keras.layers.Dense(2)(inputs), name="dense_only")
    with pytest.raises(ValueError, match=r"'dense_only' given for 'run' has no BatchNormalization"):
        plots.gamma_distribution({"run": dense_only})
    with pytest.raises(ValueError, match=r"`after` is missing"):
        plots.widths({"a": 1})
    with pytest.raises(ValueError, match=r"groups that `before` lacks: \['z'\]"):
        plots.widths({"a": 1}, {"z": 1})
    with pytest.raises(ValueError, match=r"`curves` is empty"):
        plots.accuracy_vs_rate({})
