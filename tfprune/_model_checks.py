"""Checks and views of the models tfprune transforms (not public API).

`require_graph_model` refuses what tfprune cannot read (subclassed and
unbuilt models), `functional_view` gives the graph of a Sequential or
functional model, and `warn_partial_coverage` says when a transform left
most of a model's weights alone.
"""

import warnings

import keras
import numpy as np

from tfprune._keras import functional


def require_graph_model(model, caller):
    """Checks that `model` is a built Sequential or functional Keras model.

    Args:
        model: The object to check.
        caller: String. Name of the public function asking, used in the error.

    Returns:
        The model, unchanged.

    Raises:
        TypeError: If `model` is not a Keras model, or is a subclassed model.
        ValueError: If the model is not built.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"`{caller}` expects a Keras 3 `keras.Model`; received an object of type "
            f"{type(model).__name__}. Build a Sequential or functional keras.Model first."
        )
    if isinstance(model, keras.Sequential):
        if not model.built or functional.sequential_graph(model) is None:
            raise ValueError(
                f"`{caller}` needs a built model, but Sequential model '{model.name}' is not "
                "built. Give it a `keras.Input(shape=...)` first or call `model.build(input_shape)`."
            )
        return model
    if not functional.is_functional(model):
        raise TypeError(
            f"`{caller}` cannot transform subclassed model '{model.name}' "
            f"({type(model).__name__}): its graph is Python code that tfprune cannot read. "
            "Rewrite it as a functional or Sequential model."
        )
    return model


def _is_functional(model):
    # Kept for tfprune.graph, which still calls it by this name.
    return functional.is_functional(model)


def functional_view(model):
    """Returns the functional graph of a Sequential or functional model.

    A built Sequential model holds an equivalent functional model
    (`tfprune._keras.functional.sequential_graph`); functional models are
    returned as they are.
    """
    if isinstance(model, keras.Sequential):
        return functional.sequential_graph(model)
    return model


def _parameter_count(layer):
    return int(sum(np.prod(weight.shape) for weight in layer.trainable_weights))


def warn_partial_coverage(model, covered, skipped, caller, verb, share=0.5):
    """Warns when layers that `caller` left alone hold more than `share` of the weights.

    `sparsify` and `prune_low_magnitude` only transform the layers they know;
    a model whose weights mostly sit in other layers (an embedding layer, a
    layer with weights of its own) would end up barely sparse, with no sign of
    it. Layers the user skipped on purpose do not count as left alone.

    Args:
        model: The (flattened) model that was transformed.
        covered: Set of layer names that were transformed.
        skipped: Set of layer names the user asked to leave alone.
        caller: String. The public function, named in the warning.
        verb: String. What happened to the covered layers ("converted", "wrapped").
        share: Float. The untouched share above which to warn.

    Returns:
        Float. The share of the model's trainable parameters left untouched.
    """
    sizes = {layer.name: _parameter_count(layer) for layer in model.layers}
    total = sum(sizes.values())
    untouched = {name: size for name, size in sizes.items()
                 if size and name not in covered and name not in skipped}  # fmt: skip
    left = sum(untouched.values()) / total if total else 0.0
    if left > share:
        largest = sorted(untouched.items(), key=lambda item: -item[1])[:3]
        names = ", ".join(
            f"'{name}' ({type(model.get_layer(name)).__name__}, {size / total:.0%})"
            for name, size in largest
        )
        warnings.warn(
            f"`{caller}` {verb} {len(covered)} layer(s) of model '{model.name}', but {left:.0%} of "
            f"its trainable weights are in layers it cannot transform: {names}. The result will "
            "be far less sparse than its target; see the README section on models tfprune "
            "supports.",
            stacklevel=3,
        )
    return left
