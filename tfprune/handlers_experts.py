"""keras-hub's sparse mixture-of-experts blocks: the experts' units pruned, the same units in every expert.

Mixtral, Qwen-MoE, Qwen3-MoE, Qwen 3.5-MoE and GPT-OSS keep their experts'
gated MLPs stacked, one tensor per projection: the units of the experts are
one channel group, each unit removed from every expert (the stacked tensors
cannot hold experts of different widths), scored over all experts; the
router and the number of experts are kept.
"""

import keras
import numpy as np

from tfprune import _utils
from tfprune._keras import hub
from tfprune.handlers_base import Freeze, Handler, _attribute, _width
from tfprune.handlers_grouped_attention import _constructor_config

__all__ = []  # `_MixtureOfExperts` is configured in `tfprune.handlers_decoders`' tables


class _MixtureOfExperts(Handler):
    """keras-hub's sparse mixture-of-experts blocks: the experts' units pruned, the same units in every expert.

    A router (a Dense layer, `num_experts` logits per token) sends each token
    to some experts; the experts' gated MLPs are stacked in one tensor per
    projection, `(experts, hidden, units)` for the gate and up projections
    (separate, or fused as `[gate | up]` halves or interleaved `gate, up`
    pairs) and `(experts, units, hidden)` for the down projection. Unit `u`
    is slice `u` of every expert's gate, up and down weights: the units are
    one channel group, so every expert keeps the same units (the stacked
    tensors cannot hold experts of different widths), scored over all
    experts. Removing a unit whose gate or up weights are zero in every
    expert leaves the outputs unchanged, as the routing only reads the
    router. A shared expert (an ordinary gated MLP beside the routed ones,
    Qwen-MoE) has its units as a group of its own. The hidden channels are
    read by the router, the experts and the shared expert, and made by the
    down projections; the router's logits (the second output) are one per
    expert, pinned. The block is copied from its constructor's arguments,
    read back from its attributes (`attributes` maps an argument to the
    attribute keeping it, where the names differ).

    Args:
        router: Dotted attribute path of the router Dense layer.
        experts: Attribute of the expert bank layer.
        gate: Attribute (on the expert bank) of the gate kernel, or of the
            fused gate-and-up kernel.
        down: Attribute of the down kernel.
        up: Attribute of the up kernel, when not fused.
        fused: None, `"halves"` or `"interleaved"`: how `gate` holds the up
            projection too.
        gate_up_bias: Attribute of the gate (and up) bias `(experts, units)`.
        down_bias: Attribute of the down bias `(experts, hidden)`.
        units_key: Constructor argument holding the experts' width.
        shared: Attribute of the shared expert (an MLP of three Dense layers
            `_feedforward_gate_dense`, `_feedforward_intermediate_dense`,
            `_feedforward_output_dense`).
        shared_key: Constructor argument holding the shared expert's width.
        shared_gate: Attribute of the Dense layer gating the shared expert.
        attributes: Dict from constructor argument to attribute name.
    """

    _SHARED = hub.SHARED_EXPERT_SUBLAYERS
    makes_mlp_units = True  # its unit groups are what `tfprune.prune(..., targets="mlp")` selects

    def __init__(self, router, experts, gate, down, up=None, fused=None, gate_up_bias=None, down_bias=None,
                 units_key="intermediate_dim", shared=None, shared_key=None, shared_gate=None, attributes=None):  # fmt: skip
        self.router, self.experts, self.gate, self.down, self.up = router, experts, gate, down, up
        self.fused, self.gate_up_bias, self.down_bias = fused, gate_up_bias, down_bias
        self.units_key, self.shared, self.shared_key, self.shared_gate = (
            units_key,
            shared,
            shared_key,
            shared_gate,
        )
        self.attributes = attributes or {}
        self._layouts = {}  # layer name -> (index of the down kernel, index of the shared down kernel or None)

    def _parts(self, layer):
        """(router, expert bank, shared expert Dense layers or None), or None when one is missing."""
        router, bank = _attribute(layer, self.router), getattr(layer, self.experts, None)
        if not isinstance(router, keras.layers.Dense) or bank is None:
            return None
        names = [self.gate, self.down] + ([self.up] if self.up else [])
        if not all(isinstance(getattr(bank, name, None), keras.Variable) for name in names):
            return None
        shared = None
        if self.shared is not None:
            mlp = getattr(layer, self.shared, None)
            shared = [getattr(mlp, name, None) for name in self._SHARED]
            if not all(isinstance(dense, keras.layers.Dense) for dense in shared):
                return None
        return router, bank, shared

    def trace(self, node, tracer):
        layer = node.operation
        parts = self._parts(layer)
        if parts is None:
            return Freeze(f"'{layer.name}' has no router and expert weights tfprune knows").trace(
                node, tracer
            )
        router, bank, shared = parts
        hidden = tracer.channels(self._hidden_input(node))
        gate, down = getattr(bank, self.gate), getattr(bank, self.down)
        units = tracer.new_channels(int(down.shape[1]), f"{layer.name}_experts")
        outputs = tracer.new_channels(_width(node.outputs[0]), layer.name)
        tracer.use(layer, router.kernel, 0, hidden, "input")
        # Each unit's positions on the gate (and fused up) kernel's last axis.
        on_gate = {
            None: units,
            "halves": np.concatenate([units, units]),
            "interleaved": np.repeat(units, 2),
        }
        for kernel in [gate] + ([getattr(bank, self.up)] if self.up else []):
            tracer.use(layer, kernel, 1, hidden, "input")
            tracer.use(layer, kernel, 2, on_gate[self.fused], "output")
        if self.gate_up_bias is not None:
            tracer.use(layer, getattr(bank, self.gate_up_bias), 1, on_gate[self.fused], "output")
        tracer.use(layer, down, 1, units, "input")
        tracer.use(layer, down, 2, outputs, "output")
        if self.down_bias is not None:
            tracer.use(layer, getattr(bank, self.down_bias), 1, outputs, "output")
        weights = [id(weight) for weight in layer.weights]
        shared_down = None
        if shared is not None:
            shared_gate, shared_up, shared_output = shared
            shared_units = tracer.new_channels(
                shared_output.kernel.shape[0], f"{layer.name}_shared_expert"
            )
            for dense in (shared_gate, shared_up):
                tracer.use(layer, dense.kernel, 0, hidden, "input")
                tracer.use(layer, dense.kernel, 1, shared_units, "output")
                tracer.use(layer, dense.bias, 0, shared_units, "output")
            tracer.use(layer, shared_output.kernel, 0, shared_units, "input")
            tracer.use(layer, shared_output.kernel, 1, outputs, "output")
            tracer.use(layer, shared_output.bias, 0, outputs, "output")
            shared_down = weights.index(id(shared_output.kernel))
        if self.shared_gate is not None:
            tracer.use(layer, getattr(layer, self.shared_gate).kernel, 0, hidden, "input")
        self._layouts[layer.name] = (weights.index(id(down)), shared_down)
        results = [outputs]
        for extra in node.outputs[1:]:  # the router's logits: one per expert
            logits = tracer.new_channels(_width(extra), f"{layer.name}_router")
            tracer.pin(logits, f"'{layer.name}' returns its router's logits, one per expert")
            results.append(logits)
        return results

    @staticmethod
    def _hidden_input(node):
        args, kwargs = node.arguments.args, node.arguments.kwargs
        return args[0] if args else kwargs["hidden_states"]

    def resize_for_weights(self, config, output_width, weight_shapes):
        down, shared_down = self._layouts[config["name"]]
        config = {
            **config,
            "hidden_dim": int(output_width),
            self.units_key: int(weight_shapes[down][1]),
        }
        if shared_down is not None:
            config[self.shared_key] = int(weight_shapes[shared_down][0])
        return config

    def build(self, layer, input_shapes, node=None):
        shapes = {id(tensor): shape for tensor, shape in zip(node.input_tensors, input_shapes)}
        layer.build(shapes[id(self._hidden_input(node))])

    def copy(self, layer):
        """A copy of `layer` made from its constructor's arguments, so that its config round-trips."""
        copy = type(layer).from_config(_constructor_config(layer, type(layer), self.attributes))
        _utils._build_like(copy, layer)
        copy.set_weights(layer.get_weights())
        return copy
