"""keras-hub's Stable Diffusion 3 MMDiT: its joint blocks are inlined, so their MLP units and hidden widths prune.

The blocks write their attention with upper-case einsum subscripts, reshape
with `(batch, -1, width)` over a context of unknown length and split the
joint attention at the context's length, read while the model runs.
"""

import keras
import numpy as np
import pytest
from surgery_helpers import all_outputs, assert_dead_channels_leave_no_trace

import tfprune
from tfprune import _batch_axis
from tfprune.handlers_diffusion import SliceToSizes


def _mmdit(keras_hub):
    from keras_hub.src.models.stable_diffusion_3.mmdit import MMDiT

    keras.utils.set_random_seed(0)
    return MMDiT(patch_size=2, hidden_dim=16, num_layers=2, num_heads=2, position_size=4, mlp_ratio=2.0,
                 latent_shape=(4, 4, 4), context_shape=(None, 8), pooled_projection_shape=(8,))  # fmt: skip


def _inputs(context_length, seed=0):
    rng = np.random.default_rng(seed)
    return {"latent": rng.normal(size=(2, 4, 4, 4)).astype("float32"),
            "context": rng.normal(size=(2, context_length, 8)).astype("float32"),
            "pooled_projection": rng.normal(size=(2, 8)).astype("float32"),
            "timestep": rng.uniform(size=(2, 1)).astype("float32")}  # fmt: skip


@pytest.fixture(scope="module")
def flat_mmdit():
    keras_hub = pytest.importorskip("keras_hub")
    model = _mmdit(keras_hub)
    return model, tfprune.graph.flatten(model)


def test_mmdit_blocks_are_inlined_and_compute_the_same_for_any_context_length(flat_mmdit):
    model, flat = flat_mmdit
    kept = [layer.name for layer in flat.layers if type(layer).__name__ in ("MMDiTBlock", "DismantledBlock")]
    assert kept == []
    assert any(isinstance(operation, SliceToSizes) for operation in flat.operations)
    # The context's length is read when the model runs: two lengths, one graph.
    for length in (3, 6):
        x = _inputs(length)
        np.testing.assert_allclose(flat.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5, rtol=0)


def test_dead_mlp_units_of_a_joint_block_are_removed_with_the_outputs_unchanged(flat_mmdit, tmp_path):
    _, flat = flat_mmdit
    model = keras.models.clone_model(flat)
    model.set_weights(flat.get_weights())
    graph = tfprune.graph.build(model)
    names = [group.name for group in graph if group.prunable and "joint_block" in group.name and "mlp" in group.name]
    assert sorted(names) == ["joint_block_0_context_block_mlp_dense1", "joint_block_0_x_block_mlp_dense1",
                             "joint_block_1_x_block_mlp_dense1"]  # fmt: skip (the last context block has no MLP)
    x = _inputs(5)
    # Not vacuous: removing units that still compute something changes the outputs.
    live = tfprune.surgery.remove_channels(model, {"joint_block_0_x_block_mlp_dense1": [0, 3, 5]})
    assert max(np.abs(a - b).max() for a, b in zip(all_outputs(live, x), all_outputs(model, x))) > 1e-4
    small = assert_dead_channels_leave_no_trace(model, "joint_block_0_x_block_mlp_dense1", [0, 3, 5], x, tmp_path)
    assert small.get_layer("joint_block_0_x_block_mlp_dense1").units == 32 - 3


def test_prune_shrinks_the_hidden_width_of_the_mmdit_and_reloads(flat_mmdit, tmp_path):
    model, flat = flat_mmdit
    small, _ = tfprune.prune(flat, "l1", rate=0.25, targets="hidden", round_to=1, verbose=0)
    # The context stream's width (context embedding, every context block) and the image stream's.
    assert small.get_layer("context_embedding").units == 12
    assert small.get_layer("patch_embedding_patch_embedding").filters == 12
    assert small.count_params() < 0.85 * model.count_params()
    x = _inputs(4)
    small.save(tmp_path / "small.keras")
    reloaded = keras.models.load_model(tmp_path / "small.keras")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), small.predict(x, verbose=0), atol=1e-6, rtol=0)


def test_upper_case_einsum_is_traced():
    # Keras's symbolic einsum leaves upper-case letters of the output unreplaced ("BTD,BSD->BTS").
    class Scores(keras.layers.Layer):
        def call(self, query, key):
            return keras.ops.einsum("BTD,BSD->BTS", query, key)

    Scores.__module__ = "my_project.layers"
    query, key = keras.Input((3, 4)), keras.Input((5, 4))
    model = keras.Model([query, key], Scores()(query, key))
    flat = tfprune.graph.flatten(model)
    assert [type(operation).__name__ for operation in flat.operations][-1] == "Einsum"
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(2, 3, 4)).astype("float32"), rng.normal(size=(2, 5, 4)).astype("float32")]
    np.testing.assert_allclose(flat.predict(x, verbose=0), np.einsum("btd,bsd->bts", *x), atol=1e-5, rtol=0)


def test_slice_to_sizes_reads_the_bounds_when_it_runs():
    operation = SliceToSizes(axis=1, start=[0, 1])
    x, source = np.arange(24, dtype="float32").reshape(2, 4, 3), np.zeros((2, 1))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(operation(x, source)), x[:, 1:])
    assert SliceToSizes.from_config(operation.get_config()).get_config() == operation.get_config()
    spec = operation.compute_output_spec(keras.KerasTensor((None, None, 3)), keras.KerasTensor((None, None)))
    assert tuple(spec.shape) == (None, None, 3)
    assert tuple(SliceToSizes(axis=1, stop=2).compute_output_spec(keras.KerasTensor((None, 4, 3))).shape) == (None, 2, 3)
    # A known length sliced at a size read from an unknown axis has an unknown length (not the whole axis).
    for bounds in ({"stop": [0, 1]}, {"start": [0, 1]}):
        spec = SliceToSizes(axis=1, **bounds).compute_output_spec(
            keras.KerasTensor((None, 10, 4)), keras.KerasTensor((None, None))
        )
        assert tuple(spec.shape) == (None, None, 4)
    spec = SliceToSizes(axis=1, stop=[0, 1]).compute_output_spec(keras.KerasTensor((None, 10, 4)), keras.KerasTensor((2, 3)))
    assert tuple(spec.shape) == (None, 3, 4)


def test_docstring_examples():
    import doctest

    from tfprune import handlers_diffusion

    results = doctest.testmod(handlers_diffusion, extraglobs={"tfprune": tfprune, "keras": keras})
    assert results.attempted and not results.failed


def test_batch_rows_add_up_over_a_concatenation_along_the_batch():
    # Classifier-free guidance runs the diffuser on `[latents, latents]`: two rows per sample.
    x = keras.Input((4, 3))
    doubled = keras.ops.concatenate([x, x], axis=0)
    assert _batch_axis.factor(doubled, {}) == 2
    assert _batch_axis.factor(keras.ops.einsum("btd,bsd->bts", doubled, doubled), {}) == 2


def test_a_reshape_beside_the_batch_over_an_unknown_length_is_traced_as_the_reshape_layer():
    # `(batch, -1, heads, dim)` of a sequence of any length: the batch entry is the input's own first axis.
    class SplitHeads(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.project = keras.layers.Dense(8, name="project")

        def call(self, x):
            heads = keras.ops.reshape(self.project(x), (keras.ops.shape(x)[0], -1, 2, 4))
            return keras.ops.reshape(keras.ops.relu(heads), (keras.ops.shape(x)[0], -1, 8))

    SplitHeads.__module__ = "my_project.layers"
    inputs = keras.Input((None, 8))
    model = keras.Model(inputs, SplitHeads(name="split")(inputs))
    flat = tfprune.graph.flatten(model)
    assert [layer.target_shape for layer in flat.layers if isinstance(layer, keras.layers.Reshape)] == [
        (-1, 2, 4), (-1, 8)
    ]  # fmt: skip
    for length in (2, 5):
        x = np.random.default_rng(length).normal(size=(3, length, 8)).astype("float32")
        np.testing.assert_allclose(flat.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6, rtol=0)


@pytest.mark.slow  # the Stable Diffusion 3 backbone (two CLIP encoders, a VAE) traces in about a minute
def test_dead_mlp_units_of_the_stable_diffusion_3_backbone_are_removed_with_the_outputs_unchanged(tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    from keras_hub.src.models.vae.vae_backbone import VAEBackbone

    keras.utils.set_random_seed(0)
    clip_l = keras_hub.models.CLIPTextEncoder(30, 16, 16, 2, 2, 32, "quick_gelu", -2, name="clip_l")
    clip_g = keras_hub.models.CLIPTextEncoder(30, 16, 16, 2, 2, 32, "gelu", -2, name="clip_g")
    vae = VAEBackbone([32, 32], [1, 1], [32, 32], [1, 1], sampler_method="mode", name="vae")
    model = keras_hub.models.StableDiffusion3Backbone(
        mmdit_patch_size=2, mmdit_hidden_dim=32, mmdit_num_layers=1, mmdit_num_heads=2, mmdit_position_size=32,
        mmdit_qk_norm=None, mmdit_dual_attention_indices=None, vae=vae, clip_l=clip_l, clip_g=clip_g,
        latent_channels=16, image_shape=(32, 32, 3),
    )  # fmt: skip
    flat = tfprune.graph.flatten(model)
    assert not [layer.name for layer in flat.layers if type(layer).__name__ == "MMDiTBlock"]
    rng = np.random.default_rng(0)
    tokens = {name: rng.integers(1, 30, (2, 5)).astype("int32") for name in (
        "clip_l_token_ids", "clip_l_negative_token_ids", "clip_g_token_ids", "clip_g_negative_token_ids")}  # fmt: skip
    x = {"images": rng.uniform(size=(2, 32, 32, 3)).astype("float32"),
         "latents": rng.uniform(size=(2, 4, 4, 16)).astype("float32"), **tokens,
         "num_steps": np.ones((2,), "int32"), "guidance_scale": np.ones((2,), "float32")}  # fmt: skip
    small = assert_dead_channels_leave_no_trace(flat, "joint_block_0_x_block_mlp_dense1", [1, 2, 7], x, tmp_path)
    assert small.get_layer("joint_block_0_x_block_mlp_dense1").units == 128 - 3
