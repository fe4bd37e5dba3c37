"""One-shot unstructured pruning (`tfprune.oneshot`): magnitude, Wanda and SparseGPT, checked against their definitions."""

import math

import keras
import numpy as np
import pytest

import tfprune
from tfprune.oneshot import _kernels, methods


def _dense_model(inputs=16, units=8, seed=0):
    x = keras.Input((inputs,))
    model = keras.Model(x, keras.layers.Dense(units, name="dense")(x))
    kernel = (
        np.random.default_rng(seed).normal(size=(inputs, units)).astype("float32")
    )  # the same on every backend
    model.get_layer("dense").set_weights([kernel, np.zeros(units, "float32")])
    return model


def _kernel(model, name="dense"):
    return keras.ops.convert_to_numpy(model.get_layer(name).kernel)


def _correlated_inputs(samples=512, inputs=16, seed=0):
    """Inputs driven by 4 factors plus a little noise, with very different scales: XᵀX far from diagonal."""
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(samples, 4)) @ rng.normal(size=(4, inputs))
    return (
        (factors + 0.05 * rng.normal(size=(samples, inputs))) * rng.uniform(0.2, 3.0, inputs)
    ).astype("float32")


def _pruned_count(sparsity, size):
    return int(math.floor(sparsity * size + 0.5))


def test_magnitude_zeroes_the_smallest_weights_of_the_layer_and_keeps_the_rest():
    model = _dense_model()
    kernel = _kernel(model)
    pruned, result = tfprune.oneshot.prune(model, "magnitude", sparsity=0.3, verbose=0)
    order = np.argsort(np.abs(kernel).reshape(-1))
    expected = kernel.reshape(-1).copy()
    expected[order[: _pruned_count(0.3, kernel.size)]] = 0.0
    np.testing.assert_array_equal(_kernel(pruned), expected.reshape(kernel.shape))
    assert result.layers[0]["error"] is None and result.layers[0]["zeros"] == _pruned_count(
        0.3, kernel.size
    )


def test_magnitude_two_of_four_keeps_the_two_largest_of_each_run_per_output():
    model = _dense_model()
    kernel = _kernel(model)
    pruned, _ = tfprune.oneshot.prune(model, "magnitude", m_by_n=(2, 4), verbose=0)
    runs = np.abs(kernel).reshape(4, 4, -1)  # (runs, 4 inputs, outputs)
    keep = np.argsort(runs, axis=1)[:, 2:]
    expected = np.zeros_like(runs, dtype=bool)
    np.put_along_axis(expected, keep, True, axis=1)
    np.testing.assert_array_equal(_kernel(pruned) != 0, expected.reshape(kernel.shape))
    assert tfprune.check_m_by_n(pruned, 2, 4)["dense"]["ok"]


def test_wanda_keeps_the_largest_weight_times_input_norm_of_each_output():
    model = _dense_model()
    kernel = _kernel(model)
    rng = np.random.default_rng(1)
    scales = np.array([10.0, 0.1, 3.0, 1.0] * 4)  # column norms differ by two orders of magnitude
    x = (rng.normal(size=(128, 16)) * scales).astype("float32")
    pruned, _ = tfprune.oneshot.prune(model, "wanda", sparsity=0.5, data=x, verbose=0)
    norms = np.linalg.norm(x.astype("float64"), axis=0)
    scores = np.abs(kernel) * norms[:, None]
    expected = np.zeros_like(kernel, dtype=bool)
    np.put_along_axis(
        expected, np.argsort(scores, axis=0)[8:], True, axis=0
    )  # per output, 8 of 16 kept
    np.testing.assert_array_equal(_kernel(pruned) != 0, expected)
    np.testing.assert_array_equal(_kernel(pruned)[expected], kernel[expected])  # Wanda only masks
    assert not np.array_equal(
        expected, np.abs(kernel) >= np.median(np.abs(kernel))
    )  # not magnitude's mask


def _errors(model, x, **pattern):
    errors = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        pruned, result = tfprune.oneshot.prune(model, method, data=x, verbose=0, **pattern)
        # The reported error is ||XW - XW'|| / ||XW|| on the calibration inputs.
        before, after = _kernel(model).astype("float64"), _kernel(pruned).astype("float64")
        direct = np.linalg.norm(x @ (before - after)) / np.linalg.norm(x @ before)
        assert result.errors["dense"] == pytest.approx(direct, rel=1e-4)
        errors[method] = result.errors["dense"]
    return errors


@pytest.mark.parametrize("pattern", [{"sparsity": 0.5}, {"m_by_n": (2, 4)}], ids=["50%", "2:4"])
def test_sparsegpt_reconstructs_correlated_inputs_better_than_magnitude_and_wanda(pattern):
    model = _dense_model()
    errors = _errors(model, _correlated_inputs(), **pattern)
    # Measured (every backend): 50%: magnitude 0.36, Wanda 0.23, SparseGPT 0.065; 2:4: 0.40, 0.33, 0.094.
    assert errors["sparsegpt"] < 0.5 * errors["wanda"] and errors["wanda"] < errors["magnitude"], (
        errors
    )


@pytest.mark.parametrize("pruned_input", [0, 2])
def test_sparsegpt_update_for_one_pruned_weight_is_the_optimal_brain_surgeon_step(pruned_input):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(32, 4)) @ rng.normal(size=(4, 4))
    hessian = x.T @ x
    weights = np.array([[0.8], [-1.2], [1.5], [0.9]])
    weights[pruned_input] = 1e-3
    pruned = methods.sparsegpt(weights, hessian, sparsity=0.25, block_columns=4, dampening=0.0)
    # The inputs before the pruned one are already fixed: the update solves the problem on the rest.
    rest = slice(pruned_input, None)
    inverse = np.linalg.inv(hessian[rest, rest])
    expected = weights.copy()
    expected[rest, 0] -= weights[pruned_input, 0] / inverse[0, 0] * inverse[:, 0]
    np.testing.assert_allclose(pruned, expected, atol=1e-9)
    assert pruned[pruned_input, 0] == 0.0
    if (
        pruned_input == 0
    ):  # the whole vector is free: the textbook update w - w_q / [H⁻¹]_qq H⁻¹[:, q]
        full = np.linalg.inv(hessian)
        np.testing.assert_allclose(
            pruned[:, 0], weights[:, 0] - weights[0, 0] / full[0, 0] * full[:, 0], atol=1e-9
        )


def _mixed_model():
    keras.utils.set_random_seed(4)
    x = keras.Input((6, 6, 8))
    y = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv")(x)
    y = keras.layers.Reshape((9, 8))(y)
    y = keras.layers.EinsumDense("abc,dce->abde", output_shape=(9, 2, 4), name="heads")(y)
    y = keras.layers.EinsumDense("abcd,cde->abe", output_shape=(9, 12), name="merge")(y)
    y = keras.layers.Conv1D(8, 3, padding="causal", dilation_rate=2, name="conv1d")(y)
    return keras.Model(x, keras.layers.Dense(5, name="dense")(keras.layers.Flatten()(y)))


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize("pattern", [{"sparsity": 0.6}, {"m_by_n": (2, 4)}], ids=["60%", "2:4"])
def test_every_layer_reaches_the_requested_sparsity(method, pattern):
    model = _mixed_model()
    x = np.random.default_rng(5).normal(size=(16, 6, 6, 8)).astype("float32")
    pruned, result = tfprune.oneshot.prune(
        model, method, data=x, verbose=0, block_columns=32, **pattern
    )
    assert [record["name"] for record in result.layers] == [
        "conv",
        "heads",
        "merge",
        "conv1d",
        "dense",
    ]
    for view in _kernels.kernel_views(pruned, set(), "test"):
        matrix = view.matrix()
        if "m_by_n" in pattern:
            runs = (matrix != 0).reshape(-1, view.channels // 4, 4, matrix.shape[1])
            assert runs.sum(axis=2).max() <= 2 and np.mean(matrix == 0) == 0.5, view.name
        else:
            assert abs(np.sum(matrix == 0) - 0.6 * matrix.size) <= matrix.shape[1], view.name
    if "m_by_n" in pattern:
        checked = tfprune.check_m_by_n(pruned, 2, 4)
        assert {name for name in checked} == {"conv", "conv1d", "dense"} and all(
            r["ok"] for r in checked.values()
        )


def test_the_rows_of_each_layer_times_its_matrix_are_its_outputs():
    model = _mixed_model()
    x = np.random.default_rng(6).normal(size=(2, 6, 6, 8)).astype("float32")
    for view in _kernels.kernel_views(model, set(), "test"):
        reader = keras.Model(model.input, [view.layer.input, view.layer.output])
        inputs, outputs = (keras.ops.convert_to_numpy(value) for value in reader(x))
        rows, leading = view.rows(inputs)
        bias = (
            0.0
            if view.layer.bias is None
            else keras.ops.convert_to_numpy(view.layer.bias).reshape(-1)
        )
        expected = outputs.reshape(rows.shape[0], -1) - bias
        np.testing.assert_allclose(rows @ view.matrix(), expected, atol=1e-4, err_msg=view.name)


def test_layers_are_fitted_to_the_inputs_of_the_already_pruned_layers_before_them():
    keras.utils.set_random_seed(7)
    x = keras.Input((16,))
    model = keras.Model(
        x,
        keras.layers.Dense(8, name="second")(
            keras.layers.Dense(16, activation="relu", name="first")(x)
        ),
    )
    data = _correlated_inputs(samples=96)
    batches = (data[start : start + 32] for start in range(0, 96, 32))  # batches from a generator
    pruned, result = tfprune.oneshot.prune(
        model, "sparsegpt", sparsity=0.5, data=batches, verbose=0
    )
    hidden = keras.ops.convert_to_numpy(pruned.get_layer("first")(data)).astype("float64")
    before, after = _kernel(model, "second"), _kernel(pruned, "second")
    expected = methods.reconstruction_error(before, after, hidden.T @ hidden)
    assert result.errors["second"] == pytest.approx(expected, rel=1e-4)
    assert result.layers[1]["rows"] == 96


def test_the_model_is_not_modified_and_the_result_reloads_strips_and_exports(tmp_path):
    model = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(12, activation="relu"), keras.layers.Dense(4)]
    )
    weights = [np.copy(weight) for weight in model.get_weights()]
    x = _correlated_inputs(samples=64)
    pruned, result = tfprune.oneshot.prune(model, "sparsegpt", m_by_n=(2, 4), data=x, verbose=0)
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    assert isinstance(pruned, keras.Sequential) and result.global_sparsity == 0.5
    outputs = keras.ops.convert_to_numpy(pruned(x))
    pruned.save(tmp_path / "pruned.keras")
    reloaded = keras.saving.load_model(tmp_path / "pruned.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(reloaded(x)), outputs, atol=1e-6)
    plain = tfprune.strip(pruned)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(plain(x)), outputs, atol=1e-6)
    assert all(check["ok"] for check in tfprune.check_m_by_n(plain, 2, 4).values())
    assert "sparsegpt pruning at 2:4" in str(result)
    reloaded.quantize("int8")  # Keras's own quantization afterwards keeps the zeros
    assert all(
        np.mean(keras.ops.convert_to_numpy(layer.kernel) == 0) == 0.5 for layer in reloaded.layers
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(reloaded(x)), outputs, atol=0.02 * np.abs(outputs).max()
    )
    pytest.importorskip("ai_edge_litert")
    report = tfprune.export.to_tflite(
        pruned, str(tmp_path / "pruned.tflite"), sample_inputs=x[:4], verbose=0
    )
    assert report.max_abs_error < 1e-4


def test_a_keras_hub_causal_lm_prunes_with_every_method_and_still_generates():
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(8)
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=100, num_layers=2, num_heads=4, hidden_dim=32,
                                             intermediate_dim=64, max_sequence_length=16)  # fmt: skip
    model = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    tokens = np.random.default_rng(9).integers(1, 100, (8, 12)).astype("int32")
    mask = np.ones_like(tokens)
    mask[::2, 9:] = 0  # padded positions do not count
    data = {"token_ids": tokens, "padding_mask": mask}
    prompt = {"token_ids": np.pad(tokens[:2, :4], [(0, 0), (0, 4)]),
              "padding_mask": np.pad(np.ones((2, 4), "int32"), [(0, 0), (0, 4)])}  # fmt: skip
    for method, pattern in (
        ("magnitude", {"sparsity": 0.5}),
        ("wanda", {"m_by_n": (2, 4)}),
        ("sparsegpt", {"sparsity": 0.5}),
    ):
        pruned, result = tfprune.oneshot.prune(model, method, data=data, verbose=0, **pattern)
        assert type(pruned) is type(model) and len(result.layers) == 12
        assert result.layers[0]["name"].endswith("transformer_layer_0/self_attention/query")
        assert result.layers[0]["rows"] == int(mask.sum())
        assert abs(result.global_sparsity - 0.5) < 0.01 and all(
            record["error"] < 1 for record in result.layers
        )
        generated = pruned.generate(prompt, max_length=8, stop_token_ids=None)
        assert generated["token_ids"].shape == (2, 8)
    assert np.all(
        keras.ops.convert_to_numpy(model.backbone.get_layer("transformer_layer_0").weights[0]) != 0
    )


def test_a_gemma_causal_lm_whose_projections_contract_a_middle_kernel_axis_prunes_two_of_four():
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(10)
    backbone = keras_hub.models.GemmaBackbone(
        vocabulary_size=100, num_layers=1, num_query_heads=4, num_key_value_heads=2, head_dim=8,
        hidden_dim=32, intermediate_dim=64,
    )  # fmt: skip
    model = keras_hub.models.GemmaCausalLM(backbone=backbone, preprocessor=None)
    tokens = np.random.default_rng(11).integers(1, 100, (8, 12)).astype("int32")
    data = {"token_ids": tokens, "padding_mask": np.ones_like(tokens)}
    pruned, result = tfprune.oneshot.prune(model, "sparsegpt", m_by_n=(2, 4), data=data, verbose=0)
    assert len(result.layers) == 7 and result.global_sparsity == 0.5
    query = pruned.backbone.transformer_layers[0].attention.query_dense
    assert (
        query.equation == "btd,ndh->btnh"
    )  # the kernel (heads, hidden, head_dim) contracts its middle axis
    runs = (
        keras.ops.convert_to_numpy(query.kernel).reshape(4, 8, 4, 8) != 0
    )  # (heads, runs, 4 inputs, head_dim)
    assert runs.sum(axis=2).max() == 2
    prompt = {"token_ids": tokens[:2, :8], "padding_mask": np.arange(8) < np.array([[4], [4]])}
    assert pruned.generate(prompt, max_length=8, stop_token_ids=None)["token_ids"].shape == (2, 8)


def _nested_model():
    keras.utils.set_random_seed(12)
    x = keras.Input((8,))
    inner = keras.Model(
        x, keras.layers.Dense(8, name="dense")(keras.layers.Dense(8, name="first")(x)), name="inner"
    )
    outer_input = keras.Input((8,))
    return keras.Model(outer_input, keras.layers.Dense(4, name="dense")(inner(outer_input)))


@pytest.mark.parametrize(
    "skip, pruned_names",
    [
        ((), ["inner/first", "inner/dense", "dense"]),
        (("inner/dense",), ["inner/first", "dense"]),  # a qualified name
        (("dense",), ["inner/first"]),  # a layer's own name: every layer of that name
        (("inner",), ["dense"]),  # a layer holding others: all of them
    ],
)
def test_layers_inside_nested_models_are_named_by_their_path_and_can_be_skipped(skip, pruned_names):
    model = _nested_model()
    x = np.random.default_rng(13).normal(size=(32, 8)).astype("float32")
    pruned, result = tfprune.oneshot.prune(
        model, "wanda", sparsity=0.5, data=x, skip=skip, verbose=0
    )
    assert [record["name"] for record in result.layers] == pruned_names
    for name, owner in (("inner/first", "inner"), ("inner/dense", "inner"), ("dense", None)):
        layer_name = name.split("/")[-1]
        before = _kernel(model.get_layer(owner) if owner else model, layer_name)
        after = _kernel(pruned.get_layer(owner) if owner else pruned, layer_name)
        assert np.mean(after == 0) == (0.5 if name in pruned_names else 0.0), name
        np.testing.assert_array_equal(after[after != 0], before[after != 0])


def test_bad_arguments_are_refused_in_one_sentence():
    model = _dense_model()
    with pytest.raises(ValueError, match="either `sparsity`.*or `m_by_n`"):
        tfprune.oneshot.prune(model, "magnitude", sparsity=0.5, m_by_n=(2, 4))
    with pytest.raises(ValueError, match="knows the methods"):
        tfprune.oneshot.prune(model, "obs", sparsity=0.5)
    for method in ("wanda", "sparsegpt"):
        with pytest.raises(ValueError, match="needs calibration inputs"):
            tfprune.oneshot.prune(model, method, sparsity=0.5)
    with pytest.raises(ValueError, match=r"does not have: \['dens'\]"):
        tfprune.oneshot.prune(model, "magnitude", sparsity=0.5, skip=("dens",))
    with pytest.raises(ValueError, match="must be a float in"):
        tfprune.oneshot.prune(model, "magnitude", sparsity=1.0)
    inputs = keras.Input((3, 4))
    grouped = keras.layers.EinsumDense("abc,bcd->abd", output_shape=(3, 5), name="per_row")(inputs)
    with pytest.raises(ValueError, match="cannot prune layer 'per_row'.*skip=\\('per_row',\\)"):
        tfprune.oneshot.prune(
            keras.Model(inputs, grouped), "wanda", sparsity=0.5, data=np.ones((2, 3, 4))
        )
    with pytest.raises(ValueError, match="found no Dense"):
        tfprune.oneshot.prune(model, "magnitude", sparsity=0.5, skip=("dense",))


@pytest.mark.parametrize("module_name", ["methods", "pruning", "result"])
def test_docstring_examples(module_name):
    import doctest
    import importlib

    results = doctest.testmod(importlib.import_module(f"tfprune.oneshot.{module_name}"))
    assert results.attempted and not results.failed
