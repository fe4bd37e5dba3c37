"""Turn models with tfprune's training-time layers back into plain Keras models.

`strip` is shared by every method that trains with a reparameterised or masked
layer (STR layers, magnitude-pruning masks). Such a layer takes part by
implementing one method:

    def stripped_layer(self):
        '''Returns a new, built, plain Keras layer with the same name whose
        weights hold this layer's effective (sparse) weights.'''

`strip` calls it for every layer that has it and keeps every other layer as it
is (cloned, with its weights copied).
"""

import dataclasses

import keras
import numpy as np

from tfprune._keras import layers as keras_layers
from tfprune._utils import clone_graph, require_graph_model, warn_partial_coverage
from tfprune.layers.str_base import _STR_CONFIG_KEYS

__all__ = ["SparsityReport", "sparsify", "sparsity_report", "str_layers", "strip"]


def strip(model):
    """Returns a plain Keras model with the sparse kernels baked in.

    Every layer that implements `stripped_layer()` (tfprune's STR layers and
    magnitude-pruning wrappers) is replaced by the plain Keras layer it
    returns; all other layers are cloned with their weights. The outputs of the
    returned model equal those of `model` and the input model is not modified.
    A model that nests another model holding such layers (an STR backbone
    called as one layer) is inlined first with `tfprune.graph.flatten`, so
    the result is then one flat functional model.

    Args:
        model: A built Sequential or functional Keras model.

    Returns:
        A new `keras.Model` of the same kind that contains only plain Keras
        layers (and any custom layers the input model already had).

    Raises:
        TypeError: If `model` is not a Keras model or is a subclassed model.
        ValueError: If `model` is not built.

    Example:

    >>> import keras, tfprune
    >>> inputs = keras.Input((4,))
    >>> model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    >>> plain = tfprune.strip(model)
    >>> [type(layer).__name__ for layer in plain.layers]
    ['InputLayer', 'Dense']
    """
    require_graph_model(model, "tfprune.strip")
    if any(_holds_strippable(layer) for layer in model.layers if isinstance(layer, keras.Model)):
        from tfprune import graph  # noqa: PLC0415 - graph imports the layer handlers

        model = graph.flatten(model, composites=False)

    def replace(layer):
        if hasattr(layer, "stripped_layer"):
            return layer.stripped_layer()
        return None

    return clone_graph(model, replace, caller="tfprune.strip")


def _holds_strippable(model):
    return any(
        hasattr(layer, "stripped_layer") or (isinstance(layer, keras.Model) and _holds_strippable(layer))
        for layer in getattr(model, "layers", ())
    )


# The STR arguments `sparsify` passes on: the keyword-only arguments of STRMixin.
_STR_ARGUMENTS = _STR_CONFIG_KEYS


def _str_layer_classes():
    # Exact types only: a user's subclass of Conv2D may change `call`, and STR
    # layers themselves subclass Conv2D/Dense and must not be converted twice.
    from tfprune import layers

    return {
        keras.layers.Conv1D: layers.STRConv1D,
        keras.layers.Conv2D: layers.STRConv2D,
        keras.layers.DepthwiseConv2D: layers.STRDepthwiseConv2D,
        keras.layers.Dense: layers.STRDense,
    }


def sparsify(model, skip=(), **str_kwargs):
    """Returns a new model whose Conv1D/Conv2D/DepthwiseConv2D/Dense layers are STR layers.

    Each such layer is replaced by its STR counterpart (`STRConv1D`,
    `STRConv2D`, `STRDepthwiseConv2D`, `STRDense`) with the same config, name
    and weights; the threshold parameter starts at `s_init`. With the default
    `s_init=-20` the threshold is ~2e-9, so the new model computes what the
    old one computed until training raises the thresholds. Other layers
    (BatchNormalization, biases, subclasses of the Keras layers) are copied
    unchanged. The input model is not modified. A model that nests other
    models or composite layers (a keras-hub task model, keras-hub blocks) is
    inlined first with `tfprune.graph.flatten`, so that the layers inside are
    converted too: the result is then one flat functional model. A warning
    names the largest layers left dense when they hold most of the weights.

    Args:
        model: A built Sequential or functional Keras model.
        skip: Iterable of layer names to keep dense (e.g. the first conv and
            the classifier). Defaults to `()`.
        **str_kwargs: STR arguments passed to every new layer: `s_init`,
            `threshold_fn`, `granularity`, `mode`, `threshold_regularizer`,
            `compensate_shrinkage` (see `tfprune.layers.STRMixin`).

    Returns:
        A new `keras.Model` of the same kind with STR layers.

    Raises:
        TypeError: If `model` is not a Keras model or is subclassed, `skip` is a
            string, or an unknown keyword argument is given.
        ValueError: If `model` is not built, `skip` names a layer the model does
            not have, no layer can be converted, or an STR argument is invalid.

    Example:

    >>> import keras, tfprune
    >>> inputs = keras.Input((8, 8, 1))
    >>> x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    >>> x = keras.layers.Conv2D(4, 3)(x)
    >>> outputs = keras.layers.Dense(2, name="logits")(keras.layers.Flatten()(x))
    >>> model = keras.Model(inputs, outputs)
    >>> sparse = tfprune.sparsify(model, skip=("conv", "logits"))
    >>> [type(layer).__name__ for layer in sparse.layers]
    ['InputLayer', 'Conv2D', 'STRConv2D', 'Flatten', 'Dense']
    """
    require_graph_model(model, "tfprune.sparsify")
    from tfprune import graph  # noqa: PLC0415 - graph imports the layer handlers

    if graph.needs_flattening(model):
        model = graph.flatten(model)
    if isinstance(skip, str):
        raise TypeError(
            f"`tfprune.sparsify` expects `skip` to be a list of layer names, not one string. "
            f"Received: skip={skip!r}; write skip=({skip!r},)."
        )
    skip = set(skip)
    unknown_names = sorted(skip - {layer.name for layer in model.layers})
    if unknown_names:
        raise ValueError(
            f"`tfprune.sparsify` got layer names in `skip` that model '{model.name}' does not "
            f"have; check the names in `model.summary()`. Received: skip={sorted(skip)}"
        )
    unknown_arguments = sorted(set(str_kwargs) - set(_STR_ARGUMENTS))
    if unknown_arguments:
        raise TypeError(
            f"`tfprune.sparsify` accepts only the STR arguments {_STR_ARGUMENTS}. "
            f"Received unknown arguments: {unknown_arguments}"
        )
    str_classes = _str_layer_classes()
    # Check the STR arguments once, so a bad value raises its own ValueError
    # (Keras's `from_config` would wrap it in a TypeError about deserializing).
    str_classes[keras.layers.Dense](1, **str_kwargs)
    convertible = [
        layer for layer in model.layers if type(layer) in str_classes and layer.name not in skip
    ]
    if not convertible:
        raise ValueError(
            f"`tfprune.sparsify` found no Conv1D, Conv2D, DepthwiseConv2D or Dense layer to "
            f"convert in model '{model.name}' (skip={sorted(skip)}); nothing would be sparse."
        )
    convertible_names = {layer.name for layer in convertible}

    def replace(layer):
        if layer.name not in convertible_names:
            return None
        # A plain layer's config has no `compensate_shrinkage`; from_config would
        # read that as a legacy STR file, so the default is spelled out here.
        config = {**layer.get_config(), "compensate_shrinkage": True, **str_kwargs}
        new_layer = str_classes[type(layer)].from_config(config)
        new_layer.build_from_config(layer.get_build_config())
        # Copied through NumPy: a variable assigned another variable shares its buffer
        # on JAX, and training the copy (which donates its buffers) would delete the
        # original's weights.
        keras_layers.stored_kernel(new_layer).assign(np.array(layer.kernel.numpy()))
        if layer.use_bias:
            new_layer.bias.assign(np.array(layer.bias.numpy()))
        return new_layer

    sparse = clone_graph(model, replace, caller="tfprune.sparsify")
    warn_partial_coverage(model, convertible_names, skip, "tfprune.sparsify", "converted")
    return sparse


def str_layers(model):
    """Returns every layer of `model` with a learned STR threshold, nested models included.

    Args:
        model: A Keras model (or layer with sub-layers).

    Returns:
        List of layers that implement `pruning_scores()` (STR layers), in
        `model.layers` order.

    Example:

    >>> import keras, tfprune
    >>> inputs = keras.Input((3,))
    >>> model = keras.Model(inputs, tfprune.layers.STRDense(2, name="dense")(inputs))
    >>> [layer.name for layer in tfprune.sparsity.str_layers(model)]
    ['dense']
    """
    return [layer for _, layer in _named_str_layers(model)]


# A layer with fewer than this share of its weights non-zero is reported "nearly empty".
NEARLY_EMPTY = 0.01


@dataclasses.dataclass
class SparsityReport:
    """Per-layer and global sparsity of a model's STR layers, as data.

    `print(report)` shows a table; `report.layers` holds one dict per STR layer
    with `name`, `class_name`, `threshold` (mean of `g(s)`), `parameters`
    (kernel weights of the dense layer; `rank * (input_dim + units)` for
    `STRLowRankDense`), `nonzero_parameters`, `sparsity`, `macs` and
    `nonzero_macs` (multiply-accumulates per example of the kernel, dense and
    skipping zeros; for `STRLowRankDense`, `macs` are those of the stripped
    Dense and `nonzero_macs` those of the factorised kernel at the learned rank)
    and `status`: `"empty"` (no non-zero weight: the layer cuts the network
    unless a residual path bypasses it), `"nearly empty"` (fewer than
    `NEARLY_EMPTY` of its weights non-zero) or `""`. `print(report)` lists
    such layers under the table.

    Attributes:
        layers: List of dicts, one per STR layer.
        parameters: Int. Total STR kernel weights.
        nonzero_parameters: Int. Non-zero effective weights among them.
        macs: Int. Dense MACs of the STR layers per example.
        nonzero_macs: Int. MACs that multiply a non-zero weight.

    Example:

    >>> import keras, tfprune
    >>> inputs = keras.Input((3,))
    >>> layer = tfprune.layers.STRDense(
    ...     2, s_init=5.0, kernel_initializer=keras.initializers.Constant(0.5))
    >>> model = keras.Model(inputs, layer(inputs))
    >>> tfprune.sparsity_report(model).global_sparsity  # g(5) = 0.993 > 0.5
    1.0
    """

    layers: list
    parameters: int
    nonzero_parameters: int
    macs: int
    nonzero_macs: int

    @property
    def global_sparsity(self):
        """Float. Share of STR kernel weights that are exactly zero."""
        return 1.0 - self.nonzero_parameters / max(self.parameters, 1)

    @property
    def emptied_layers(self):
        """List of the names of STR layers with no non-zero weight."""
        return [record["name"] for record in self.layers if record["status"] == "empty"]

    @property
    def nearly_empty_layers(self):
        """List of the names of STR layers with fewer than `NEARLY_EMPTY` of their weights non-zero."""
        return [record["name"] for record in self.layers if record["status"] == "nearly empty"]

    def __str__(self):
        header = f"{'layer':<28}{'type':<20}{'threshold':>11}{'params':>10}{'nonzero':>10}{'sparsity':>10}{'MACs':>12}{'nonzero MACs':>14}"
        lines = [header, "-" * len(header)]
        for record in self.layers:
            lines.append(
                f"{record['name'][:27]:<28}{record['class_name']:<20}{record['threshold']:>11.3g}"
                f"{record['parameters']:>10}{record['nonzero_parameters']:>10}{record['sparsity']:>10.1%}"
                f"{record['macs']:>12}{record['nonzero_macs']:>14}"
            )
        lines.append("-" * len(header))
        lines.append(
            f"{'total':<59}{self.parameters:>10}{self.nonzero_parameters:>10}"
            f"{self.global_sparsity:>10.1%}{self.macs:>12}{self.nonzero_macs:>14}"
        )
        if self.emptied_layers:
            lines.append(f"EMPTY (no non-zero weight; they cut the network): {', '.join(self.emptied_layers)}")
        if self.nearly_empty_layers:
            lines.append(f"Nearly empty (< {NEARLY_EMPTY:.0%} non-zero): {', '.join(self.nearly_empty_layers)}")
        return "\n".join(lines)


def _named_str_layers(model, prefix=""):
    # Names as `tfprune.analyze` spells them: nested models prefix "outer/".
    for layer in getattr(model, "layers", ()):
        if hasattr(layer, "pruning_scores"):
            yield f"{prefix}{layer.name}", layer
        elif getattr(layer, "layers", None):
            yield from _named_str_layers(layer, f"{prefix}{layer.name}/")


def _status(nonzero, parameters):
    if nonzero == 0:
        return "empty"
    return "nearly empty" if nonzero < NEARLY_EMPTY * parameters else ""


def sparsity_report(model):
    """Measures the sparsity of every STR layer of `model`.

    Counts are exact: a weight counts as zero when its effective value (what
    the forward pass and `tfprune.strip` use) is zero. Dense MACs come from
    `tfprune.analyze` (0 where it cannot count them, e.g. unknown spatial size).

    Args:
        model: A built Keras model with STR layers (e.g. from `sparsify`).

    Returns:
        A `SparsityReport`: per-layer records, totals and `global_sparsity`;
        `print()` it for a table.

    Raises:
        TypeError: If `model` is not a Keras model or is subclassed.
        ValueError: If `model` is not built or has no STR layer.

    Example:

    >>> import keras, tfprune
    >>> inputs = keras.Input((8, 8, 1))
    >>> x = keras.layers.Conv2D(4, 3)(inputs)
    >>> model = tfprune.sparsify(keras.Model(inputs, x), s_init=-1.0)
    >>> report = tfprune.sparsity_report(model)
    >>> report.layers[0]["macs"]  # 3*3*1*4 weights at 6*6 positions
    1296
    """
    from tfprune.analysis import analyze

    require_graph_model(model, "tfprune.sparsity_report")
    layers = list(_named_str_layers(model))
    if not layers:
        raise ValueError(
            f"`tfprune.sparsity_report` found no STR layer in model '{model.name}'; "
            "convert it with `tfprune.sparsify(model)` first."
        )
    analysis = analyze(model)
    records = []
    for name, layer in layers:
        scores, thresholds, weights_per_score = layer.pruning_scores()
        zero = np.broadcast_to(scores <= thresholds, scores.shape)
        parameters = int(scores.size * weights_per_score)
        nonzero = int(np.count_nonzero(~zero) * weights_per_score)
        # Every kernel weight takes part in the same number of MACs (one per
        # output position), so MACs that multiply a non-zero weight are
        # `positions * nonzero`; `kernel_params` is the stripped kernel size.
        record = analysis[name]
        macs = record.macs or 0
        records.append(
            {
                "name": name,
                "class_name": type(layer).__name__,
                "threshold": float(np.mean(thresholds)),
                "parameters": parameters,
                "nonzero_parameters": nonzero,
                "sparsity": 1.0 - nonzero / parameters,
                "macs": macs,
                "nonzero_macs": macs * nonzero // max(record.kernel_params, 1),
                "status": _status(nonzero, parameters),
            }
        )
    return SparsityReport(
        layers=records,
        **{
            key: sum(record[key] for record in records)
            for key in ("parameters", "nonzero_parameters", "macs", "nonzero_macs")
        },
    )
