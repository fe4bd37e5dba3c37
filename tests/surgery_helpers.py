"""Helpers shared by the graph/surgery tests: provably dead channels."""

import keras
import numpy as np


def random_weights(model, seed=0):
    """Non-trivial weights, BN statistics included, so that slicing errors show."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        value = rng.normal(0.0, 0.5, weight.shape)
        if "moving_variance" in weight.path:
            value = rng.uniform(0.5, 1.5, weight.shape)
        weight.assign(value.astype("float32"))
    return model


def kill_channels(model, group, channels, roles=("output", "param")):
    """Zeroes, in place, every producer and per-channel weight of `channels`.

    Producer filters and biases become 0, so the channels are 0 right after
    each producer; BatchNormalization beta and moving mean become 0 (moving
    variance 1) and depthwise kernels/biases 0, so they stay 0 through every
    zero-preserving layer. Consumers then read exact zeros from them. With
    `"input"` in `roles` the consumers' rows of the channels are zeroed too,
    so that nothing reads them whatever the layers in between make of a zero.
    """
    wanted = set(int(channel) for channel in channels)
    weights = {weight.path: weight for weight in model.weights}
    for member in group.members:
        if member.role not in roles:
            continue
        positions = [p for p, c in zip(member.positions, member.channels) if c in wanted]
        for path, axis in member.weights:
            value = np.array(weights[path].numpy())
            fill = 1.0 if path.endswith("moving_variance") else 0.0
            index = [slice(None)] * value.ndim
            index[axis] = positions
            value[tuple(index)] = fill
            weights[path].assign(value)


def weights_snapshot(model):
    """A copy of every weight of `model`, by path."""
    return {weight.path: np.array(weight.numpy()) for weight in model.weights}


def assert_same_weights(model, snapshot):
    assert set(snapshot) == {weight.path for weight in model.weights}
    for weight in model.weights:
        np.testing.assert_array_equal(weight.numpy(), snapshot[weight.path])


def outputs(model, x):
    """`model(x)` as a NumPy array, on any backend (PyTorch's tensors carry gradients)."""
    return keras.ops.convert_to_numpy(model(x))


def all_outputs(model, x):
    """Every output of `model` on `x` (nested outputs flattened), as NumPy arrays."""
    return [keras.ops.convert_to_numpy(value) for value in keras.tree.flatten(model(x))]


def assert_dead_channels_leave_no_trace(model, group, channels, x, tmp_path, roles=("output", "param")):
    """Channels whose weights (`roles`, as `kill_channels`) are zero are removed with the outputs
    unchanged to 1e-5; the smaller model reloads from `.keras` to 1e-6. Returns the smaller model."""
    import tfprune

    graph = tfprune.graph.build(model)
    assert graph[group].prunable, graph[group].reason
    kill_channels(model, graph[group], channels, roles=roles)
    small = tfprune.surgery.remove_channels(model, {group: list(channels)})
    for got, want in zip(all_outputs(small, x), all_outputs(model, x)):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    small.save(tmp_path / "small.keras")
    reloaded = keras.models.load_model(tmp_path / "small.keras")
    for got, want in zip(all_outputs(reloaded, x), all_outputs(small, x)):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    return small


def decode_step_by_step(model, tokens, prompt=3):
    """The logits of a pruned causal LM run through `tfprune.decoding`: the prompt, then one token at a time."""
    import tfprune

    logits, cache = tfprune.decoding.build_cache(model, tokens[:, :prompt], max_length=tokens.shape[1])
    steps = [keras.ops.convert_to_numpy(logits)]
    for index in range(prompt, tokens.shape[1]):
        logits, cache = tfprune.decoding.call_with_cache(model, tokens[:, index : index + 1], cache, index)
        steps.append(keras.ops.convert_to_numpy(logits))
    return np.concatenate(steps, axis=1)
