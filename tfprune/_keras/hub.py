"""keras-hub classes by module path: keras-hub exports its models, not its building blocks.

tfprune's handlers for keras-hub layers are registered by `(module, class
name)` so that keras-hub need not be imported (nor installed); the module
paths live under `keras_hub.src`, which is private. These helpers build the
keys.
"""

__all__ = ["LIBRARY_ROOT", "layer_module", "model_module", "utils_module"]

LIBRARY_ROOT = "keras_hub.src."


def model_module(tail):
    """The module path of a keras-hub model file.

    Example:
        >>> model_module("vit.vit_layers")
        'keras_hub.src.models.vit.vit_layers'
    """
    return f"{LIBRARY_ROOT}models.{tail}"


def layer_module(tail):
    """The module path of a keras-hub shared layer file.

    Example:
        >>> layer_module("modeling.position_embedding")
        'keras_hub.src.layers.modeling.position_embedding'
    """
    return f"{LIBRARY_ROOT}layers.{tail}"


def utils_module(tail):
    """The module path of a keras-hub utility file.

    Example:
        >>> utils_module("keras_utils")
        'keras_hub.src.utils.keras_utils'
    """
    return f"{LIBRARY_ROOT}utils.{tail}"


# The private sublayers keras-hub's mixture-of-experts blocks keep, by the role
# tfprune's handler gives them (router, the experts' gate/up/down projections,
# the shared expert's gate).
MOE_SUBLAYERS = {
    "mixtral": {
        "router": "_sparse_feedforward_gate_dense",
        "gate": "_expert_feedforward_gate_dense",
        "up": "_expert_feedforward_intermediate_dense",
        "down": "_expert_feedforward_output_dense",
    },
    "qwen_moe": {
        "router": "_sparse_feedforward_gate_dense",
        "gate": "_expert_feedforward_gate_dense",
        "down": "_expert_feedforward_output_dense",
    },
    "qwen3_5_moe": {
        "router": "_router_gate",
        "gate": "_expert_feedforward_gate_dense",
        "down": "_expert_feedforward_output_dense",
        "shared_gate": "_shared_expert_gate",
    },
}
# The three Dense layers of a keras-hub shared expert's feed-forward block.
SHARED_EXPERT_SUBLAYERS = ("_feedforward_gate_dense", "_feedforward_intermediate_dense", "_feedforward_output_dense")
# FNet's encoder: its feed-forward block's inner and output Dense layers.
FNET_FEEDFORWARD = (("_intermediate_dense",), "_output_dense")


def set_attention_head_width(layer, head_dim, hidden_dim=None):
    """Makes a keras-hub attention layer scale and reshape for heads of `head_dim`.

    keras-hub's attention layers keep `1 / sqrt(head_dim)` in a private
    `_inv_norm_factor`, and Mixtral's also its head and hidden widths
    (`_head_dim`, `_hidden_dim`), all derived from the hidden width at
    construction; a layer whose heads keep their width while the hidden width
    shrinks needs them set from the head width instead.

    Args:
        layer: a keras-hub attention layer.
        head_dim: Int. The width of one head.
        hidden_dim: Int or None. The hidden width, for layers that keep it.

    Example:
        >>> class Attention:
        ...     _head_dim = 8
        >>> layer = Attention()
        >>> set_attention_head_width(layer, 16, hidden_dim=64)
        >>> layer._inv_norm_factor, layer._head_dim, layer._hidden_dim
        (0.25, 16, 64)
    """
    layer._inv_norm_factor = 1.0 / float(head_dim) ** 0.5
    if hasattr(layer, "_head_dim"):
        layer._head_dim = head_dim
        layer._hidden_dim = hidden_dim
