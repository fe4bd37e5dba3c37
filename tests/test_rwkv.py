"""keras-hub's RWKV-7: time-mix heads, channel-mix units and the hidden width pruned; cached decoding."""

import keras
import numpy as np
import pytest

import tfprune
from tfprune import handlers_rwkv

keras_hub = pytest.importorskip("keras_hub")

VOCAB, LENGTH, HEAD_SIZE = 50, 7, 4
# 4 heads of 4 channels, 32 channel-mix units.
_CONFIG = dict(hidden_size=16, head_size=HEAD_SIZE, num_layers=2, vocabulary_size=VOCAB, intermediate_dim=32,
               gate_lora=8, mv_lora=8, aaa_lora=8, decay_lora=8)  # fmt: skip
DEAD_HEAD, DEAD_UNITS, DEAD_RANKS = 2, [1, 5, 6, 12, 17, 20, 29, 31], [0, 6]


_RANKS = ("decay_lora", "aaa_lora", "mv_lora", "gate_lora")


def _causal_lm():
    keras.utils.set_random_seed(0)
    return keras_hub.models.RWKV7CausalLM(backbone=keras_hub.models.RWKV7Backbone(**_CONFIG), preprocessor=None)


def _tokens(seed=0):
    return np.random.default_rng(seed).integers(1, VOCAB, (2, LENGTH)).astype("int32")


def _logits(model, tokens):
    return keras.ops.convert_to_numpy(model({"token_ids": tokens, "padding_mask": np.ones_like(tokens)}))


def _zero(weight, index, axis):
    value = keras.ops.convert_to_numpy(weight).copy()
    value[(slice(None),) * axis + (index,)] = 0.0
    weight.assign(value)


def _kill(model):
    """Head DEAD_HEAD and ranks DEAD_RANKS of every time mix, units DEAD_UNITS of every channel mix: dead, scored 0."""
    head = slice(DEAD_HEAD * HEAD_SIZE, (DEAD_HEAD + 1) * HEAD_SIZE)
    for block in model.backbone.rwkv_layers:
        _zero(block.att.receptance.kernel, head, 1)
        _zero(block.att.output_layer.kernel, head, 0)
        for letter in "wavg":
            if hasattr(block.att, f"{letter}1"):  # the first block has no value mix
                _zero(getattr(block.att, f"{letter}1"), DEAD_RANKS, 1)
                _zero(getattr(block.att, f"{letter}2"), DEAD_RANKS, 0)
        _zero(block.ffn.key.kernel, DEAD_UNITS, 1)
        _zero(block.ffn.value.kernel, DEAD_UNITS, 0)


def _mixes(model, kind):
    return [layer for layer in model.layers if type(layer).__name__ == kind]


def _decode_step_by_step(model, tokens, prompt=3):
    logits, cache = tfprune.decoding.build_cache(model, tokens[:, :prompt])
    steps = [keras.ops.convert_to_numpy(logits)]
    for index in range(prompt, tokens.shape[1]):
        logits, cache = tfprune.decoding.call_with_cache(model, tokens[:, index : index + 1], cache, index)
        steps.append(keras.ops.convert_to_numpy(logits))
    return np.concatenate(steps, axis=1), cache


def test_tfprune_time_mix_computes_what_keras_hubs_computes():
    # The second block's time mix mixes its values with the first block's (`v_first`).
    original = _causal_lm().backbone.rwkv_layers[1].att
    copy = handlers_rwkv.tfprune_class("RWKV7TimeMix").from_config(original.get_config())
    copy.build((None, None, 16))
    assert [weight.shape for weight in copy.weights] == [weight.shape for weight in original.weights]
    copy.set_weights(original.get_weights())
    random = np.random.default_rng(0)
    x, v_first = (random.normal(size=(2, LENGTH, 16)).astype("float32") for _ in range(2))
    mask = np.ones((2, LENGTH, 1), "float32")
    mask[1, :2] = 0.0
    want = original(x, v_first=v_first, padding_mask=mask)
    got = copy(x, v_first=v_first, padding_mask=mask)
    for a, b in zip(want, got):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(b), keras.ops.convert_to_numpy(a), atol=1e-6)


def test_dead_heads_and_units_are_removed_without_changing_the_logits_and_decode_with_a_cache(tmp_path):
    model = _causal_lm()
    _kill(model)
    tokens = _tokens()
    pruned, result = tfprune.prune(model, "l1", rate=0.25, targets="all", round_to=1, verbose=0)
    groups = {group.name: (group.before, group.after) for group in result.groups}
    # One heads group for both blocks (coupled by v_first), one units group per channel mix, one per rank.
    ranks = [f"rwkv_layer_{block}_RWKV_TIME_MIX_{key}" for block in (0, 1) for key in _RANKS]
    ranks.remove("rwkv_layer_0_RWKV_TIME_MIX_mv_lora")
    assert groups == {"rwkv_layer_0_RWKV_TIME_MIX_heads": (4, 3), "rwkv_layer_0_RWKV_CMIX_dense_k": (32, 24),
                      "rwkv_layer_1_RWKV_CMIX_dense_k": (32, 24), **{name: (8, 6) for name in ranks}}  # fmt: skip
    time_mixes = _mixes(pruned, "RWKV7TimeMix")
    assert [(layer.n_head, layer.hidden_size) for layer in time_mixes] == [(3, 12)] * 2
    assert [getattr(time_mixes[1], key) for key in _RANKS] == [6] * 4
    assert [layer.dim_ffn for layer in _mixes(pruned, "RWKV7ChannelMix")] == [24, 24]
    full = _logits(pruned, tokens)
    np.testing.assert_allclose(full, _logits(model, tokens), atol=1e-5)
    decoded, cache = _decode_step_by_step(pruned, tokens)
    np.testing.assert_allclose(decoded, full, atol=1e-5)
    assert tuple(cache["rwkv_layer_1_RWKV_TIME_MIX"].shape) == (2, 3, HEAD_SIZE, HEAD_SIZE)

    path = tmp_path / "pruned.keras"
    pruned.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(_logits(reloaded, tokens), full, atol=1e-6)


def test_hidden_width_shrinks_through_both_mixes_and_the_cache_follows():
    model = _causal_lm()
    tokens = _tokens(1)
    pruned, result = tfprune.prune(model, "l1", rate=0.25, targets="hidden", round_to=1, verbose=0)
    assert [(group.before, group.after) for group in result.groups] == [(16, 12)]
    assert pruned.get_layer("token_embedding").output_dim == 12
    # The heads keep their width; the time mixes read 12 channels and write 12.
    assert [(layer.hidden_size, layer.x_r.shape[0], layer.output_layer.units)
            for layer in _mixes(pruned, "RWKV7TimeMix")] == [(16, 12, 12)] * 2  # fmt: skip
    full = _logits(pruned, tokens)
    assert full.shape == (2, LENGTH, VOCAB)  # the vocabulary never shrinks
    decoded, cache = _decode_step_by_step(pruned, tokens)
    np.testing.assert_allclose(decoded, full, atol=1e-5)
    assert tuple(cache["rwkv_layer_0_RWKV_CMIX/token_shift"].shape) == (2, 1, 12)


def test_a_time_mix_called_with_its_state_stays_whole():
    layer = _causal_lm().backbone.rwkv_layers[1].att
    x = keras.Input((None, 16))
    state = keras.Input((4, HEAD_SIZE, HEAD_SIZE), batch_size=None)
    outputs = layer(x, cache_state=state)
    graph = tfprune.graph.build(keras.Model([x, state], list(outputs)))
    assert not any(group.prunable for group in graph.groups)
    assert any("recurrent-state cache" in group.reason for group in graph.groups)


def test_docstring_examples():
    import doctest

    results = doctest.testmod(handlers_rwkv, extraglobs={"tfprune": tfprune, "keras": keras})
    assert results.attempted and not results.failed


def test_mlp_targets_are_the_channel_mix_units():
    _, result = tfprune.prune(_causal_lm(), "l1", rate=0.25, targets="mlp", round_to=1, verbose=0)
    assert {group.name: (group.before, group.after) for group in result.groups} == {
        "rwkv_layer_0_RWKV_CMIX_dense_k": (32, 24), "rwkv_layer_1_RWKV_CMIX_dense_k": (32, 24)}


def test_the_recurrence_as_one_loop_computes_keras_hubs():
    from keras_hub.src.models.rwkv7.rwkv7_layer import rnn_generalized_delta_rule

    random = np.random.default_rng(0)
    tensors = [random.normal(size=(2, 5, 3, HEAD_SIZE)).astype("float32") * 0.5 for _ in range(6)]
    state = random.normal(size=(2, 3, HEAD_SIZE, HEAD_SIZE)).astype("float32")
    for initial_state in (None, state):
        want = rnn_generalized_delta_rule(*tensors, initial_state=initial_state)
        got = handlers_rwkv._recurrence_loop(*tensors, initial_state=initial_state)
        for a, b in zip(want, got):
            np.testing.assert_allclose(keras.ops.convert_to_numpy(b), keras.ops.convert_to_numpy(a), atol=1e-5)


@pytest.mark.slow  # about 30 s: conversion and the interpreter check
def test_pruned_model_exports_to_litert_for_any_length(tmp_path):
    # Only the units are pruned: the time mixes keep their size, copied as tfprune's, which export.
    pruned, _ = tfprune.prune(_causal_lm(), "l1", rate=0.25, targets="mlp", round_to=1, verbose=0)
    tokens = _tokens(2)
    report = tfprune.export.to_tflite(pruned, tmp_path / "rwkv.tflite", verbose=0,
                                      sample_inputs={"token_ids": tokens, "padding_mask": np.ones_like(tokens)})
    assert report.max_abs_error < 1e-4
    assert [list(entry["shape"]) for entry in report.inputs] == [[-1, -1]] * 2  # any batch, any length
    assert "WHILE" in report.ops  # the recurrence, one loop


def test_loading_a_saved_rwkv_mix_without_keras_hubs_class_says_to_install_it(monkeypatch):
    from tfprune import handlers_rwkv

    monkeypatch.setitem(handlers_rwkv._CLASSES, "RWKV7TimeMix", None)  # as when keras-hub lacks RWKV-7
    handlers_rwkv._deferred("RWKV7TimeMix")  # the stand-in a fresh process registers at import (delegates later)
    stand_in = keras.saving.get_registered_object("tfprune>RWKV7TimeMix")
    with pytest.raises(ImportError, match=r"keras-hub's RWKV7TimeMix \(RWKV-7\).*pip install keras-hub"):
        stand_in.from_config({})
