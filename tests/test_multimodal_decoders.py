"""Vision-language decoders: PaliGemma's blocks (a mask padded to a run-time length) and BLIP-2's causal LM."""

import keras
import numpy as np
import pytest

import tfprune
from tfprune.handlers_multimodal import PadToSizes

keras_hub = pytest.importorskip("keras_hub")

VOCAB, LENGTH, PROMPT = 50, 7, 3


def _pali_gemma():
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.PaliGemmaBackbone(
        vocabulary_size=VOCAB, num_layers=1, num_query_heads=4, num_key_value_heads=2, hidden_dim=16,
        intermediate_dim=32, head_dim=8, image_size=16, vit_patch_size=8, vit_num_heads=2, vit_hidden_dim=16,
        vit_num_layers=1, vit_intermediate_dim=32,
    )  # fmt: skip
    return keras_hub.models.PaliGemmaCausalLM(backbone=backbone, preprocessor=None)


def _pali_gemma_inputs(length=LENGTH, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, VOCAB, (2, length)).astype("int32")
    # The prompt sees itself both ways (response_mask 0), the response causally.
    response = np.array([[0] * PROMPT + [1] * (length - PROMPT)] * 2, "int32")
    return {"images": rng.uniform(size=(2, 16, 16, 3)).astype("float32"), "token_ids": tokens,
            "padding_mask": np.ones_like(tokens), "response_mask": response}  # fmt: skip


def _numpy(value):
    return keras.ops.convert_to_numpy(value)


def _kill_heads_and_units(block, heads, units):
    """Zeroes query heads `heads` (query and output projections) and gated MLP units `units`: dead channels."""
    attention = block.attention
    for dense, axis in ((attention.query_dense, 0), (attention.output_dense, 0)):
        kernel = _numpy(dense.kernel).copy()
        index = [slice(None)] * kernel.ndim
        index[axis] = heads
        kernel[tuple(index)] = 0.0
        dense.kernel.assign(kernel)
    for dense in (block.gating_ffw, block.gating_ffw_2):
        kernel = _numpy(dense.kernel).copy()
        kernel[:, units] = 0.0
        dense.kernel.assign(kernel)
    rows = _numpy(block.ffw_linear.kernel).copy()
    rows[units] = 0.0
    block.ffw_linear.kernel.assign(rows)


def test_pali_gemma_blocks_are_inlined_with_their_mask_padded_for_any_length():
    model = _pali_gemma()
    flat = tfprune.graph.flatten(model)
    assert not any(type(layer).__name__ == "PaliGemmaDecoderBlock" for layer in flat.layers)
    assert "PadToSizes" in {type(operation).__name__ for operation in flat.operations}
    for length in (4, 9):
        sample = _pali_gemma_inputs(length, seed=length)
        np.testing.assert_allclose(_numpy(flat(sample)), _numpy(model(sample)), atol=1e-5)


def test_pad_to_sizes_pads_to_the_length_of_another_tensor_and_round_trips():
    op = PadToSizes(pad_width=[[0, 0], [[0, 1], 0]], constant_values=1)
    padded = _numpy(op(np.array([[0, 0], [1, 0]], "int32"), np.zeros((2, 4, 3), "float32")))
    np.testing.assert_array_equal(padded, [[1, 1, 0, 0], [1, 1, 1, 0]])
    assert PadToSizes.from_config(op.get_config()).get_config() == op.get_config()
    spec = op.compute_output_spec(keras.KerasTensor((None, None), "int32"), keras.KerasTensor((None, 5, 3)))
    assert tuple(spec.shape) == (None, 5)


def test_pali_gemma_loses_dead_heads_and_units_reloads_and_decodes_with_a_cache(tmp_path):
    model = _pali_gemma()
    block = model.backbone.transformer_layers[0]
    # Query head 1 reads key/value head 0, query head 2 key/value head 1: one dead head in each group.
    # Gemma's intermediate_dim 32 is two gated halves of 16 units.
    _kill_heads_and_units(block, heads=[1, 2], units=np.arange(0, 16, 2))
    sample = _pali_gemma_inputs()
    pruned, result = tfprune.prune(model, "l1", threshold=1e-9, targets="all", round_to=1)
    widths = {group.name: (group.before, group.after) for group in result.groups if group.before != group.after}
    assert sorted(widths.values()) == [(2, 1), (2, 1), (16, 8)]
    attention = [layer for layer in pruned.layers if hasattr(layer, "num_key_value_heads")]
    assert [(layer.num_query_heads, layer.num_key_value_heads) for layer in attention] == [(2, 2)]
    full = _numpy(pruned(sample))
    np.testing.assert_allclose(full, _numpy(model(sample)), atol=1e-5)

    path = tmp_path / "pali_gemma.keras"
    pruned.save(path)
    np.testing.assert_allclose(_numpy(keras.saving.load_model(path)(sample)), full, atol=1e-6)

    # Cached decoding: the image tokens and the prompt first, then one token at a time.
    images = model.backbone.image_sequence_length
    prefix = images + PROMPT
    tokens = sample["token_ids"]
    logits, cache = tfprune.decoding.build_cache(pruned, tokens[:, :PROMPT], max_length=images + LENGTH,
                                                 inputs={"images": sample["images"]}, prefix_length=prefix)  # fmt: skip
    steps = [_numpy(logits)]
    for index in range(PROMPT, LENGTH):
        logits, cache = tfprune.decoding.call_with_cache(pruned, tokens[:, index : index + 1], cache,
                                                         images + index, prefix_length=prefix)  # fmt: skip
        steps.append(_numpy(logits))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-4)


def test_cached_decoding_says_which_left_out_input_the_outputs_need():
    flat = tfprune.graph.flatten(_pali_gemma())
    # The same model with the image tokens as an output too: a later call (no images) cannot give them.
    image_tokens = next(layer for layer in flat.layers if type(layer).__name__ == "PaliGemmaVitEmbeddings").output
    model = keras.Model(flat.inputs, [flat.outputs[0], image_tokens])
    sample = _pali_gemma_inputs()
    _, cache = tfprune.decoding.build_cache(model, sample["token_ids"], max_length=20, inputs={"images": sample["images"]})
    with pytest.raises(ValueError, match=r"need its input\(s\) \['images'\] in this call; pass them in `inputs`"):
        tfprune.decoding.call_with_cache(model, sample["token_ids"][:, :1], cache, 11)


# ---------------------------------------------------------------- BLIP-2


def _blip2_causal_lm():
    keras.utils.set_random_seed(0)
    common = dict(num_layers=1, num_heads=4, hidden_dim=16, intermediate_dim=32)
    vision = keras_hub.models.BLIP2VisionEncoder(image_size=16, patch_size=8, use_patch_bias=True,
                                                 use_class_token=True, use_mha_bias=True, use_mlp_bias=True,
                                                 dropout_rate=0.0, layer_norm_epsilon=1e-6, initializer_range=0.02,
                                                 **common)  # fmt: skip
    qformer = keras_hub.models.BLIP2QFormer(num_query_tokens=2, vision_dim=16, cross_attention_frequency=1,
                                            dropout=0.0, layer_norm_epsilon=1e-6, **common)  # fmt: skip
    language = keras_hub.models.BLIP2CustomOPT(vocabulary_size=VOCAB, num_query_tokens=2, dropout=0.0,
                                               max_sequence_length=LENGTH + 2, qformer_hidden_dim=16, **common)  # fmt: skip
    backbone = keras_hub.models.BLIP2Backbone(vision_encoder=vision, qformer=qformer, language_model=language)
    return keras_hub.models.BLIP2CausalLM(backbone=backbone, preprocessor=None)


def _blip2_inputs(length=LENGTH, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, VOCAB, (2, length)).astype("int32")
    return {"images": rng.uniform(size=(2, 16, 16, 3)).astype("float32"), "token_ids": tokens,
            "padding_mask": np.ones_like(tokens)}  # fmt: skip


def test_blip2_causal_lm_keeps_one_token_embedding_tied_to_its_output_projection_and_decodes_with_a_cache(tmp_path):
    model = _blip2_causal_lm()
    # The OPT block's dead feedforward units go; the logits stay.
    block = model.backbone.language_model.transformer_layers[0]
    units = np.arange(0, 32, 2)
    for weight, index in ((block._feedforward_intermediate_dense.kernel, (slice(None), units)),
                          (block._feedforward_intermediate_dense.bias, units)):  # fmt: skip
        value = _numpy(weight).copy()
        value[index] = 0.0
        weight.assign(value)
    pruned, result = tfprune.prune(model, "l1", threshold=1e-9, targets="mlp", round_to=1)
    assert [(group.before, group.after) for group in result.groups if group.before != group.after] == [(32, 16)]
    assert not any(type(layer).__name__ == "BLIP2OPTEmbeddings" for layer in pruned.layers)
    assert sum(type(layer).__name__ == "ReversibleEmbedding" for layer in pruned.layers) == 1
    # Only the 16 units' weights are gone (kept whole, the OPT embedding layer held a second token embedding).
    assert model.count_params() - pruned.count_params() == 16 * (16 + 1 + 16)
    for length in (3, LENGTH):  # positions made from the length, as the layer's buffer holds them
        sample = _blip2_inputs(length, seed=length)
        np.testing.assert_allclose(_numpy(pruned(sample)), _numpy(model(sample)), atol=1e-5)
    sample = _blip2_inputs()
    full = _numpy(pruned(sample))
    path = tmp_path / "blip2.keras"
    pruned.save(path)
    np.testing.assert_allclose(_numpy(keras.saving.load_model(path)(sample)), full, atol=1e-6)

    # Cached decoding: the 2 query tokens and the prompt first; the text's positions then follow the cache.
    queries, tokens = 2, sample["token_ids"]
    logits, cache = tfprune.decoding.build_cache(pruned, tokens[:, :PROMPT], max_length=queries + LENGTH,
                                                 inputs={"images": sample["images"]})  # fmt: skip
    steps = [_numpy(logits)]
    for index in range(PROMPT, LENGTH):
        logits, cache = tfprune.decoding.call_with_cache(pruned, tokens[:, index : index + 1], cache, queries + index)
        steps.append(_numpy(logits))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-4)


def test_docstring_examples():
    import doctest

    from tfprune import handlers_multimodal

    results = doctest.testmod(handlers_multimodal, extraglobs={"tfprune": tfprune, "keras": keras})
    assert results.attempted and not results.failed


def test_pad_outside_a_trace_takes_every_form_keras_takes():
    from tfprune import graph_traced_ops as graph

    x = np.arange(3, dtype="float32")
    for pad_width in ((1, 2), [(1, 2)], ((1, 2),)):
        expected = keras.ops.convert_to_numpy(keras.ops.pad(x, pad_width))
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(graph._traced_pad(x, pad_width)), expected)
