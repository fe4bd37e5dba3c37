"""keras-hub's RWKV-7: channel-mix units, time-mix heads and the hidden width.

An `RWKV7Backbone` is a functional model of `RWKV7_Block` layers, which hold
no weights of their own, so `tfprune.graph.flatten` inlines them. What they
run holds weights of its own and stays one layer each, with a handler here:

- `RWKV7ChannelMix` (the feed-forward part): `value(relu(key(x + shift *
  x_k)) ** 2)`. Its units (the `dense_k` Dense's units, the `dense_v`
  kernel's rows) are a group; the hidden width indexes `x_k`, `dense_k`'s
  rows and `dense_v`'s columns. `dim_ffn` records the new width.
- `RWKV7TimeMix` (the recurrent "attention"): `hidden_size // head_size`
  heads of `head_size` channels, each with an `(N, N)` state. The channels
  inside a head cannot go: the key used to update the state is L2-normalised
  over the head, `ln_x` normalises each head's output (a GroupNormalization
  with one group per head), and the state couples every key channel of a
  head with every value channel. Whole heads can: head `h` is channels
  `h * N ... (h + 1) * N - 1` of the receptance, key and value projections'
  outputs, of `w0`, `a0`, `v0`, `k_k`, `k_a`, of the low-rank
  projections `w2`, `a2`, `v2`, `g2`, of `ln_x`'s scale and offset, row
  `h` of `r_k`, and rows of the output projection. Every block after the
  first mixes its values with the first block's (`v_first`, channel by
  channel), so head `h` of every block is one group: a head is removed from
  all blocks together (`ChannelGroup.heads_of` is `"<first time mix>/heads"`,
  so it is pruned as heads, `targets="heads"`). The hidden width indexes the
  six token-shift coefficients `x_r ... x_g`, the rows of `w1`, `a1`, `v1`,
  `g1` and of the receptance, key and value kernels, and the output
  projection's columns. The rank of each low-rank projection `x @ w1 @ w2`
  (and `a`, `v`, `g`: `decay_lora`, `aaa_lora`, `mv_lora`, `gate_lora`)
  is a group of its own, the first factor's columns and the second's rows:
  between them it passes nothing, a tanh or a sigmoid, channel by channel.

keras-hub's time mix makes its inner width (the heads) equal to its input
width, and on TensorFlow it loops in Python over the sequence length, so a
graph traced for any length (an export) fails. `tfprune.graph.flatten`
copies it as tfprune's `RWKV7TimeMix` (registered in the `tfprune`
package): its weights read the input's width, its `hidden_size` is the
heads' width, `num_heads * head_size`, and traced for an unknown length it
runs the same recurrence as one loop operation. keras-hub's channel mix
does not load back from its own config (its `build` takes the list `.keras`
gives back for its input shape as a list of shapes), so it is copied as
tfprune's `RWKV7ChannelMix`, which does.

Called with a recurrent cache (keras-hub's `generate_call`), both layers
are frozen; `tfprune.decoding` runs a pruned RWKV-7 causal LM step by step
(`tfprune.decoding_rwkv`).
"""

import keras
import numpy as np
from keras import ops

from tfprune import _first_use
from tfprune._keras import hub
from tfprune.handlers import Freeze, Handler, _width

__all__ = ["tfprune_class"]

_MODULE = hub.model_module("rwkv7.rwkv7_layer")
# The time mix's own weights, in the order keras-hub creates them (the surgery's sliced weights follow it).
_MIXING = ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g")
# The low-rank projections `x @ <letter>1 @ <letter>2`: (letter, rank argument, with an offset `<letter>0`).
_LOW_RANK = (("w", "decay_lora", True), ("a", "aaa_lora", True), ("v", "mv_lora", True), ("g", "gate_lora", False))
_PER_HEAD = ("k_k", "k_a")


def _plain(*dense_layers):
    """Whether the Dense layers are plain (built, no LoRA, not quantized): what the handlers slice."""
    return all(
        isinstance(dense, keras.layers.Dense) and getattr(dense, "kernel", None) is not None
        and not getattr(dense, "lora_enabled", False) and not getattr(dense, "quantization_mode", None)
        for dense in dense_layers
    )  # fmt: skip


def _cached(node, names):
    """Whether the mix is called in keras-hub's generation mode or with a cache (a keyword, or a second argument)."""
    args, kwargs = node.arguments.args, node.arguments.kwargs
    return (kwargs.get("not_generation_mode", True) is False or any(kwargs.get(name) is not None for name in names)
            or any(value is not None for value in args[1:]))  # fmt: skip


def _hidden_input(node):
    args, kwargs = node.arguments.args, node.arguments.kwargs
    return args[0] if args else kwargs["x"]


def _weight_index(layer, weight):
    return [id(variable) for variable in layer.weights].index(id(weight))


class _Mix(Handler):
    """What keras-hub's two RWKV-7 mixes share: rebuilt and copied as tfprune's class `class_name`, built on the hidden input."""

    class_name = None  # "RWKV7ChannelMix" or "RWKV7TimeMix"

    def __init__(self):
        self._kernel_index = {}  # layer name -> where `resize_for_weights` reads the new widths

    def rebuild(self, layer, config):
        """tfprune's class from `config` (its config loads back; a time mix's input width may differ from its heads')."""
        return tfprune_class(self.class_name).from_config(config)

    def copy(self, layer):
        """A copy of a built keras-hub mix (same weights) as tfprune's class, or None to copy it from its config."""
        cls = tfprune_class(self.class_name)
        if type(layer) is cls or not layer.built:
            return None
        copy = cls.from_config(layer.get_config())
        copy.build(tuple(layer.get_build_config()["input_shape"]))
        copy.set_weights(layer.get_weights())
        return copy

    def build(self, layer, input_shapes, node=None):
        shapes = {id(tensor): shape for tensor, shape in zip(node.input_tensors, input_shapes)}
        layer.build(shapes[id(_hidden_input(node))])


class _ChannelMix(_Mix):
    """keras-hub's `RWKV7ChannelMix`: its units prune, and the hidden width passes through it."""

    class_name = "RWKV7ChannelMix"
    makes_mlp_units = True  # its unit groups are what `tfprune.prune(..., targets="mlp")` selects
    # `_kernel_index`: layer name -> index of dense_k's kernel in `layer.weights`

    def trace(self, node, tracer):
        layer = node.operation
        key, value = getattr(layer, "key", None), getattr(layer, "value", None)
        why = (
            "is called with a token-shift cache" if _cached(node, ("last_cache_x",)) or len(node.outputs) != 1
            else "has no plain dense_k and dense_v Dense layers" if not _plain(key, value)
            else None
        )  # fmt: skip
        if why is not None:
            return Freeze(f"'{layer.name}' {why}").trace(node, tracer)
        hidden = tracer.channels(_hidden_input(node))
        tracer.use(layer, layer.x_k, 0, hidden, "param")
        tracer.use(layer, key.kernel, 0, hidden, "input")
        units = tracer.new_channels(key.units, f"{layer.name}_{key.name}")
        tracer.use(layer, key.kernel, 1, units, "output")
        tracer.use(layer, value.kernel, 0, units, "input")
        outputs = tracer.new_channels(_width(node.outputs[0]), layer.name)
        tracer.use(layer, value.kernel, 1, outputs, "output")
        self._kernel_index[layer.name] = _weight_index(layer, key.kernel)
        return [outputs]

    def resize_for_weights(self, config, output_width, weight_shapes):
        return {**config, "dim_ffn": int(weight_shapes[self._kernel_index[config["name"]]][1])}



class _TimeMix(_Mix):
    """keras-hub's `RWKV7TimeMix` (and tfprune's): whole heads prune, and the hidden width passes through it."""

    class_name = "RWKV7TimeMix"
    # `_kernel_index`: layer name -> (receptance kernel's index in `layer.weights`, {rank argument: index})

    def trace(self, node, tracer):
        layer = node.operation
        projections = [getattr(layer, name, None) for name in ("receptance", "key", "value", "output_layer")]
        why = (
            "is called with a recurrent-state cache"
            if _cached(node, ("last_cache_x", "cache_state")) or len(node.outputs) != 3
            else "has no plain receptance, key, value and output Dense layers" if not _plain(*projections)
            else None
        )  # fmt: skip
        if why is not None:
            return Freeze(f"'{layer.name}' {why}").trace(node, tracer)
        receptance, key, value, output = projections
        hidden = tracer.channels(_hidden_input(node))
        heads = tracer.new_channels(layer.n_head, f"{layer.name}_heads")
        tracer.mark_heads(heads, f"{layer.name}/heads")
        inner = np.repeat(heads, layer.head_size)
        for name in _MIXING:
            tracer.use(layer, getattr(layer, name), 0, hidden, "param")
        ranks = {}  # rank argument -> index of the first factor in `layer.weights`
        for letter, rank_key, _ in _LOW_RANK:
            first, second = getattr(layer, f"{letter}1", None), getattr(layer, f"{letter}2", None)
            if first is None:  # the first block has no value mix (`add_v_first=False`)
                continue
            tracer.use(layer, first, 0, hidden, "input")
            tracer.use(layer, second, 1, inner, "param")
            tracer.use(layer, getattr(layer, f"{letter}0", None), 0, inner, "param")
            # The rank passes the factors' product (or a tanh or sigmoid, channel by channel) alone.
            rank = tracer.new_channels(first.shape[1], f"{layer.name}_{rank_key}")
            tracer.use(layer, first, 1, rank, "output")
            tracer.use(layer, second, 0, rank, "input")
            ranks[rank_key] = _weight_index(layer, first)
        for name in _PER_HEAD:
            tracer.use(layer, getattr(layer, name), 0, inner, "param")
        tracer.use(layer, layer.r_k, 0, heads, "param")
        # Heads are scored on their receptance columns (a group's first "output" weight); key and value follow.
        for dense in (receptance, key, value):
            tracer.use(layer, dense.kernel, 0, hidden, "input")
            tracer.use(layer, dense.kernel, 1, inner, "output")
        tracer.use(layer, layer.ln_x.gamma, 0, inner, "param")
        tracer.use(layer, layer.ln_x.beta, 0, inner, "param")
        tracer.use(layer, output.kernel, 0, inner, "input")
        outputs = tracer.new_channels(_width(node.outputs[0]), layer.name)
        tracer.use(layer, output.kernel, 1, outputs, "output")
        v_first = node.arguments.kwargs.get("v_first")
        if isinstance(v_first, keras.KerasTensor) and layer.add_v_first:
            # Mixed channel by channel with the first block's values, which it passes on.
            tracer.couple(tracer.channels(v_first), inner)
            values = tracer.channels(v_first)
        else:
            values = inner
        state = tracer.new_channels(layer.head_size, f"{layer.name}_state")
        tracer.pin(state, f"'{layer.name}' returns its recurrent state, whose channels are a head's")
        self._kernel_index[layer.name] = (_weight_index(layer, receptance.kernel), ranks)
        return [outputs, values, state]

    def resize_for_weights(self, config, output_width, weight_shapes):
        receptance, ranks = self._kernel_index[config["name"]]
        config = {**config, "hidden_size": int(weight_shapes[receptance][1])}
        return {**config, **{key: int(weight_shapes[index][1]) for key, index in ranks.items()}}



def _recurrence_loop(receptance, decay, key, value, a, b, initial_state=None):
    """keras-hub's generalized delta rule (`rnn_generalized_delta_rule`) as one `ops.fori_loop` over the length.

    Per head, `state = state * exp(-exp(decay_t)) + state @ a_t @ b_t +
    value_t @ key_t` and the output is `state @ receptance_t`, all `(batch,
    length, heads, size)` tensors; the state is `(batch, heads, size, size)`.
    """
    batch, length, heads, size = ops.shape(receptance)
    dtype = receptance.dtype
    receptance, key, value, a, b = (ops.cast(tensor, "float32") for tensor in (receptance, key, value, a, b))
    decay = ops.exp(-ops.exp(ops.cast(decay, "float32")))
    state = ops.zeros((batch, heads, size, size)) if initial_state is None else initial_state
    state = ops.cast(ops.broadcast_to(state, (batch, heads, size, size)), "float32")

    def step(index, carry):
        state, out = carry

        def at(tensor):  # (batch, heads, size) at position `index`
            return ops.squeeze(ops.slice(tensor, (0, index, 0, 0), (batch, 1, heads, size)), 1)

        state = (state * at(decay)[:, :, None, :] + ops.matmul(ops.matmul(state, at(a)[..., None]), at(b)[:, :, None, :])
                 + ops.matmul(at(value)[..., None], at(key)[:, :, None, :]))  # fmt: skip
        output = ops.matmul(state, at(receptance)[..., None])
        return state, ops.slice_update(out, (0, index, 0, 0), ops.reshape(output, (batch, 1, heads, size)))

    state, out = ops.fori_loop(0, length, step, (state, ops.zeros((batch, length, heads, size))))
    return ops.cast(out, dtype), state


class _TimeMixMixin:
    """keras-hub's `RWKV7TimeMix` whose heads' width (`hidden_size`) may differ from its input width.

    Weights reading the input (the token-shift coefficients, the first
    factors of the low-rank projections, the receptance, key and value
    kernels' rows) and the output projection's columns have the input's
    width; the others have the heads' width, `hidden_size`. With both equal
    it computes what keras-hub's layer computes. Traced on TensorFlow for a
    sequence length it does not know (an export), it runs the recurrence as
    one `ops.fori_loop` (keras-hub's operator loops in Python over the
    length there, as it does nowhere else).
    """

    def build(self, input_shape):
        if isinstance(input_shape[0], (list, tuple)):
            input_shape = input_shape[0]
        width, inner = int(input_shape[-1]), self.n_head * self.head_size

        def add(name, shape):
            setattr(self, name, self.add_weight(shape=shape, name=name, initializer=self.kernel_initializer))

        for name in _MIXING:
            add(name, (width,))
        for letter, rank_key, with_offset in _LOW_RANK:
            if letter == "v" and not self.add_v_first:
                continue
            if with_offset:
                add(f"{letter}0", (inner,))
            add(f"{letter}1", (width, getattr(self, rank_key)))
            add(f"{letter}2", (getattr(self, rank_key), inner))
        for name in _PER_HEAD:
            add(name, (inner,))
        add("r_k", (self.n_head, self.head_size))
        rwkv7_layer = __import__(_MODULE, fromlist=["TimeShift"])
        self.time_shift = rwkv7_layer.TimeShift(dtype=self.dtype_policy)
        for name, units in (("receptance", inner), ("key", inner), ("value", inner), ("output_layer", width)):
            dense = keras.layers.Dense(units, use_bias=False, kernel_initializer=self.kernel_initializer, name=name,
                                       dtype=self.dtype_policy)  # fmt: skip
            setattr(self, name, dense)
        self.ln_x = keras.layers.GroupNormalization(groups=self.n_head, epsilon=64e-5, dtype=self.dtype_policy)
        for name in ("receptance", "value", "key"):  # keras-hub's order: the weights' order
            getattr(self, name).build(input_shape)
        self.output_layer.build((*input_shape[:-1], inner))
        self.ln_x.build((None, inner))
        self.built = True

    def call(self, x, v_first=None, padding_mask=None, last_cache_x=None, cache_state=None, rnn_mode=False,
             not_generation_mode=True, training=None):  # fmt: skip
        initial_state = self.initial_state if cache_state is None else cache_state
        if padding_mask is not None:
            padding_mask = ops.cast(padding_mask[..., None] if ops.ndim(padding_mask) == 2 else padding_mask, x.dtype)
            x = x * padding_mask
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        inner = self.n_head * self.head_size

        def by_head(tensor):
            return ops.reshape(tensor, (batch, length, self.n_head, self.head_size))

        shift = self.time_shift(x, last_cache_x) - x
        if last_cache_x is not None or not not_generation_mode:
            last_cache_x = x[:, -1:]
        if padding_mask is not None:
            shift = shift * padding_mask
        mixed = {name: x + shift * getattr(self, name) for name in _MIXING}
        receptance = self.receptance(mixed["x_r"])
        low_rank = ops.matmul(ops.tanh(ops.matmul(mixed["x_w"], self.w1)), self.w2)
        decay = -ops.softplus(-(self.w0 + low_rank)) - 0.5
        key = self.key(mixed["x_k"])
        value = self.value(mixed["x_v"])
        if v_first is None or not self.add_v_first:
            v_first = value
        else:
            mix = ops.sigmoid(self.v0 + ops.matmul(ops.matmul(mixed["x_v"], self.v1), self.v2))
            value = value + (v_first - value) * mix
        rate = ops.sigmoid(self.a0 + ops.matmul(ops.matmul(mixed["x_a"], self.a1), self.a2))
        gate = ops.matmul(ops.sigmoid(ops.matmul(mixed["x_g"], self.g1)), self.g2)
        removal = self.normalize(by_head(key * self.k_k))
        key = key * (1 + (rate - 1) * self.k_a)
        if padding_mask is not None:
            decay = ops.where(padding_mask, decay, -1e9)
        operator = self.RWKV7_OP if training else self.RWKV7_OP_RNN if rnn_mode else self.RWKV7_OP_INFERENCE
        if not isinstance(length, int) and keras.config.backend() == "tensorflow":
            # keras-hub's TensorFlow operator loops in Python over the length, which a graph traced
            # for any length (an export) does not know: the same recurrence as one loop operation.
            operator = _recurrence_loop
        state = None if initial_state is None else ops.cast(initial_state, "float32")
        out, final_state = operator(by_head(receptance), by_head(decay), by_head(key), by_head(value), -removal,
                                    removal * by_head(rate), initial_state=state)  # fmt: skip
        out = ops.reshape(self.ln_x(ops.reshape(out, (batch * length, inner))), (batch, length, inner))
        bonus = ops.sum(by_head(receptance) * by_head(key) * self.r_k, axis=-1, keepdims=True) * by_head(value)
        out = self.output_layer((out + ops.reshape(bonus, (batch, length, inner))) * gate)
        if not_generation_mode:
            return out, v_first, final_state
        return out, v_first, last_cache_x, final_state

    def compute_output_shape(self, input_shape):
        inner = self.n_head * self.head_size
        return [input_shape, (*input_shape[:-1], inner), (input_shape[0], self.n_head, self.head_size, self.head_size)]


class _ChannelMixMixin:
    """keras-hub's `RWKV7ChannelMix`, whose `build` also takes the list a `.keras` file gives back as its input shape.

    keras-hub's reads any list as a list of shapes and builds from its first
    entry, so `[None, None, width]` (what JSON makes of the recorded tuple)
    fails and a model holding the layer on its own does not load back.
    """

    def build(self, input_shape):
        if isinstance(input_shape, list) and not isinstance(input_shape[0], (list, tuple)):
            input_shape = tuple(input_shape)
        super().build(input_shape)


_MIXINS = {"RWKV7TimeMix": _TimeMixMixin, "RWKV7ChannelMix": _ChannelMixMixin}
_CLASSES = {}


def tfprune_class(name):
    """tfprune's subclass of keras-hub's RWKV-7 layer `name`, or None when keras-hub (or RWKV-7) is missing.

    `"RWKV7TimeMix"`: a heads' width that may differ from its input width;
    `"RWKV7ChannelMix"`: a config that loads back. Made and registered for
    serialization (package `tfprune`) on first use, so that importing
    tfprune does not import keras-hub; a `.keras` file naming one finds it
    through a stand-in registered when tfprune is imported.

    Args:
        name: String. `"RWKV7TimeMix"` or `"RWKV7ChannelMix"`.

    Returns:
        The class, or None.

    Example:

    >>> tfprune.handlers_rwkv.tfprune_class("RWKV7TimeMix").__name__
    'RWKV7TimeMix'
    """
    try:
        return _first_use.subclass(_CLASSES, name, _MODULE, _MIXINS[name], __name__,
                                   handler=lambda: BY_CLASS[(_MODULE, name)])  # fmt: skip
    except ImportError:
        return None


def _deferred(name):
    """Registers a stand-in under `tfprune>name` (Keras finds a saved layer's class by that name only)."""
    return _first_use.register_stand_in(name, tfprune_class, family=" (RWKV-7)")


def __getattr__(name):
    # `tfprune.handlers_rwkv.RWKV7TimeMix` (how Keras finds the class of a saved layer).
    return _first_use.module_attribute(name, _MIXINS, tfprune_class, __name__)


# keras-hub classes by (module, name), found by `tfprune.handlers.handler_for` (registered below).
BY_CLASS = {(_MODULE, "RWKV7ChannelMix"): _ChannelMix(), (_MODULE, "RWKV7TimeMix"): _TimeMix()}
for _name in _MIXINS:
    _deferred(_name)
