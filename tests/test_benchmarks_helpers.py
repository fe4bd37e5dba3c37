"""The benchmark scripts' sentences on where tfprune is behind: computed from the numbers they are given.

These helpers write the "where tfprune is behind" lines of benchmarks/RESULTS.md,
so a wrong comparison would print a false claim there.
"""

import doctest

import numpy as np
import pytest

from benchmarks import (
    common,
    export_litert,
    keras_hub_sweep,
    str_vs_tfmot,
    structured_latency,
    tfmot_compare,
)


@pytest.mark.parametrize("module", [common, export_litert, keras_hub_sweep, str_vs_tfmot, structured_latency, tfmot_compare],
                         ids=lambda m: m.__name__)  # fmt: skip
def test_docstring_examples(module):
    failures, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failures == 0
    assert attempted > 0


def test_tfmot_compare_behind_names_accuracy_and_time_only_when_behind():
    slower = tfmot_compare.behind(-0.5, {"tfprune": [3.0, 5.0, 4.0], "TFMOT": [2.0, 1.0, 6.0]})
    assert slower[2] == "- Accuracy: 0.50 points below TFMOT on the mean over the seeds."
    assert slower[3] == "- Pruning time: median 4.0 s vs 2.0 s for TFMOT (2.00x)."
    ahead = tfmot_compare.behind(0.0, {"tfprune": [1.0, 9.0, 2.0], "TFMOT": [2.0, 2.0, 2.0]})
    assert ahead[2].startswith("- Nowhere in this run")
    assert len(ahead) == 4


def test_str_vs_tfmot_step_time_behind_compares_ratios_not_absolute_times():
    medians = {
        "Keras 3 plain": 0.004,
        "STR layers": 0.005,  # 1.25x
        "STR + budget": 0.0044,  # 1.10x, not behind TFMOT's 1.20x
        "tf_keras plain": 0.020,
        "TFMOT prune_low_magnitude": 0.024,  # 1.20x
    }
    [sentence] = str_vs_tfmot.step_time_behind("CNN", medians)
    assert "STR layers 1.25x" in sentence and "STR + budget" not in sentence
    assert "TFMOT 1.20x" in sentence
    assert "every STR step is faster than TFMOT's (5.0 ms at most vs 24.0 ms" in sentence
    assert "5.0x the Keras 3 one" in sentence
    medians["Keras 3 plain"] = 0.02  # STR 1.25x -> 0.025 s, slower in absolute time than TFMOT's 0.024 s
    medians["STR layers"] = 0.025
    [sentence] = str_vs_tfmot.step_time_behind("CNN", medians)
    assert "the slowest STR step is not faster than TFMOT's (25.0 ms at most vs 24.0 ms" in sentence
    medians["STR layers"] = 0.024  # exactly 1.20x: not behind
    medians["STR + budget"] = 0.022
    assert str_vs_tfmot.step_time_behind("CNN", medians) == []


def test_structured_latency_behind_the_ideal_reports_range_and_count():
    sentence = structured_latency.behind_the_ideal([("x 1t", 0.92), ("x 2t", 1.05), ("y 1t", 0.75)])
    assert "75% (y 1t) to 105% (x 2t)" in sentence
    assert "2 of 3 cases below 100%" in sentence


def test_export_litert_slower_than_dense_matches_quantization_and_threads():
    latencies = {
        ("dense", "none"): {1: 1.0, 2: 0.8},
        ("dense", "int8"): {1: 0.5, 2: 0.4},
        ("zeros", "none"): {1: 1.2, 2: 0.7},  # slower with 1 thread only
        ("zeros", "int8"): {1: 0.45, 2: 0.4},  # never slower (equal is not slower)
    }
    lines = export_litert.slower_than_dense(latencies)
    assert lines[1:] == ["- zeros (quantize none), 1 thread(s): 1.200 ms vs 1.000 ms dense (1.20x).", ""]
    del latencies["zeros", "none"]
    assert export_litert.slower_than_dense(latencies) == []


def test_str_vs_tfmot_depthwise_table_counts_emptied_layers_per_target():
    runs = [
        dict(target=0.9, accuracy=0.90, sparsity_all=0.9, depthwise=[0.5, 0.7, 0.9]),
        dict(target=0.9, accuracy=0.80, sparsity_all=0.9, depthwise=[0.5, 0.7, 0.8]),
        dict(target=0.98, accuracy=0.10, sparsity_all=0.98, depthwise=[1.0, 1.0, 0.9]),
        dict(target=0.98, accuracy=0.20, sparsity_all=0.98, depthwise=[1.0, 0.99, 0.9]),
    ]
    lines = str_vs_tfmot.depthwise_table({"Net": runs, "CNN": []}, [0.9, 0.98])
    rows = [line for line in lines if line.startswith("| Net")]
    assert rows == [
        "| Net | 90% | 85.00 ± 5.00 | 90.00% | 68.3% | 0.0 of 3 |",
        "| Net | 98% | 15.00 ± 5.00 | 98.00% | 96.5% | 1.5 of 3 |",
    ]
    assert "- Net at 98%: SparsityBudget emptied 1.5 of 3 DepthwiseConv2D layers (test accuracy 15.00%)." in lines
    assert not any("at 90%" in line for line in lines)
    assert str_vs_tfmot.depthwise_table({"CNN": []}, [0.9]) == []


def grid_result(method, seed, accuracy, target=0.95, architecture="plain_cnn", optimizer="adam", emptied=0):
    layers = [["conv", 1.0]] * emptied + [["dense", 0.5]]
    return dict(architecture=architecture, optimizer=optimizer, target=target, seed=seed, method=method,
                start="scratch", epochs=1, limit=None, accuracy=accuracy, sparsity=target, layers=layers, seconds=1.0)  # fmt: skip


def test_str_grid_names_cells_behind_and_at_chance_and_averages_per_target():
    from benchmarks import str_grid

    results = [
        grid_result("str", 0, 80.0), grid_result("str", 1, 82.0),  # STR 81 vs GMP 90: 9 points behind
        grid_result("gmp", 0, 89.0), grid_result("gmp", 1, 91.0),
        grid_result("str", 0, 10.0, target=0.98, emptied=1), grid_result("gmp", 0, 30.0, target=0.98),
    ]  # fmt: skip
    text = "\n".join(str_grid.tables(results, quick=False))
    assert "| 81.0 ± 1.0 | 90.0 ± 1.0 | -9.0 | 2 | 0.0 |" in text
    assert "STR 9.0 points below GMP." in text
    assert "98%: STR at 10.0% (chance)." in text
    assert "| 98% | 10.0 | 30.0 | -20.0 | 1 |" in text  # the per-target mean over cells
    assert "more than 10 points below it):\n\n- Nowhere in this run." in text  # no dense cell here
    dense = [dict(grid_result("dense", 0, 95.0), target=None)]
    text = "\n".join(str_grid.tables(results + dense, quick=False))
    assert "- plain CNN 32-64-128, GAP, no normalization, 16x16, adam, 95%: STR 81.0% against 95.0% dense (GMP 90.0%)." in text
    assert "adam, 98%: STR 10.0% against 95.0% dense (GMP 30.0%)." in text


def test_str_grid_on_fashion_mnist_has_its_own_cells_and_titles_and_leaves_digits_keys_alone():
    from benchmarks import str_grid

    digits = str_grid.grid_cells(quick=False)
    fashion = str_grid.grid_cells(quick=False, data="fashion-mnist", train_size=15000)
    # Digits cells keep the keys of the committed cell file: a rerun must not retrain them.
    assert all("data" not in cell and "train_size" not in cell for cell in digits)
    assert {(cell["data"], cell["train_size"]) for cell in fashion} == {("fashion-mnist", 15000)}
    assert {cell["architecture"] for cell in fashion} == {"plain_cnn", "resnet_bn"}
    # The main grid and its dense references: 2 seeds x 3 targets x 2 models x 2 optimizers x 2 methods + 8.
    assert len(fashion) == 48 + 8 and {cell["epochs"] for cell in fashion} == {10}
    assert not {str_grid.cell_key(cell) for cell in fashion} & {str_grid.cell_key(cell) for cell in digits}
    tfmot = str_grid.tfmot_cells(quick=False, data="fashion-mnist", train_size=None)
    assert {cell["data"] for cell in tfmot} == {"fashion-mnist"} and len(tfmot) == 6
    results = [dict(grid_result(method, 0, accuracy), data="fashion-mnist", train_size=15000)
               for method, accuracy in (("str", 85.0), ("gmp", 84.0))]  # fmt: skip
    text = "\n".join(str_grid.tables(results, quick=False))
    assert "| plain CNN 32-64-128, GAP, no normalization, 28x28 | adam |" in text and "16x16" not in text


def test_str_grid_adds_a_third_seed_only_where_the_methods_are_within_two_points():
    from benchmarks import str_grid

    close = [grid_result("str", 0, 90.0), grid_result("gmp", 0, 91.5)]
    apart = [grid_result("str", 0, 90.0, target=0.98), grid_result("gmp", 0, 80.0, target=0.98)]
    cells = str_grid.third_seed_cells(close + apart)
    assert sorted((cell["method"], cell["seed"], cell["target"]) for cell in cells) == [("gmp", 2, 0.95), ("str", 2, 0.95)]
    assert all("accuracy" not in cell for cell in cells)
    assert str_grid.third_seed_cells(close + apart + [dict(close[0], seed=2)]) == []  # already has seed 2


def test_keras_hub_sweep_writes_its_table_by_family_between_the_readme_markers(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{keras_hub_sweep.README_START}\nold table\n{keras_hub_sweep.README_END}\nafter\n")
    monkeypatch.setattr(keras_hub_sweep, "HERE", tmp_path / "benchmarks")
    records = [
        {"name": "A", "family": "a", "outcome": "pruned", "params_removed": 0.3},
        {"name": "B", "family": "b", "outcome": "pruned", "params_removed": 0.05},
        {"name": "C", "family": "b", "outcome": "refused", "error": "C computes top_k. Second sentence."},
    ]
    keras_hub_sweep.write_readme(records, "python -m benchmarks.keras_hub_sweep")
    text = readme.read_text()
    assert "old table" not in text and text.startswith("# x\n\nbefore\n") and text.endswith(f"{keras_hub_sweep.README_END}\nafter\n")
    assert "3 configurations: 2 pruned, 1 refused; 1 pruned by at least 10% of their parameters." in text
    assert "| b | B, C | 1 of 2 | 5.0 | C: refused: C computes top_k. |" in text
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="README.md has no"):
        keras_hub_sweep.write_readme(records, "command")


def test_keras_hub_sweep_compares_boolean_outputs_as_numbers():
    # MoonshineBackbone returns its padding mask: `a - b` on booleans raised instead of giving 0.
    from benchmarks.keras_hub_sweep import _largest_difference

    mask = np.array([[True, False]])
    assert _largest_difference(mask, mask) == 0.0
    assert _largest_difference(mask, ~mask) == 1.0
    assert _largest_difference(np.float32([1.0, 2.0]), np.float32([1.0, 2.5])) == 0.5


def test_image_data_loads_rgb_digits_and_refuses_what_it_cannot_load():
    from benchmarks.common import image_data

    (x_train, y_train), (x_test, _) = image_data("digits", 8, as_numpy=True)
    assert x_train.shape == (1437, 8, 8, 3) and x_test.shape == (360, 8, 8, 3) and y_train.max() == 9
    with pytest.raises(ValueError, match=r"Unknown data set: data='cifar'; use one of digits, fashion-mnist\."):
        image_data("cifar", 8)
    with pytest.raises(ValueError, match=r"train_size=100 applies to fashion-mnist only"):
        image_data("digits", 8, train_size=100)
