"""`tfprune.oneshot.prune`: one-shot unstructured pruning of a trained model, layer by layer."""

import warnings

import keras
import numpy as np

from tfprune import _features
from tfprune._keras import functional
from tfprune._utils import (
    check_verbose,
    clone_graph,
    first_line,
    is_integer,
    is_number,
    require_graph_model,
)
from tfprune.magnitude.wrapper import check_pattern
from tfprune.oneshot import _calibration, _kernels, methods
from tfprune.oneshot.result import OneShotResult

__all__ = ["METHODS", "prune"]

_CALLER = "tfprune.oneshot.prune"


def _by_magnitude(weights, hessian, channels, options):
    return methods.magnitude(weights, options["sparsity"], options["m_by_n"], channels)


def _by_wanda(weights, hessian, channels, options):
    norms = np.sqrt(np.diag(hessian))
    return methods.wanda(weights, norms, options["sparsity"], options["m_by_n"], channels)


def _by_sparsegpt(weights, hessian, channels, options):
    return methods.sparsegpt(weights, hessian, channels=channels, **options)


# Method name -> (`(weights, hessian, channels, options) -> pruned weights`, whether it needs data).
METHODS = {
    "magnitude": (_by_magnitude, False),
    "wanda": (_by_wanda, True),
    "sparsegpt": (_by_sparsegpt, True),
}


def _check_arguments(method, sparsity, m_by_n, data, skip, block_columns, dampening, batch_size):
    if method not in METHODS:
        raise ValueError(
            f"`{_CALLER}` knows the methods {sorted(METHODS)}. Received: method={method!r}"
        )
    if (sparsity is None) == (m_by_n is None):
        raise ValueError(
            f"`{_CALLER}` takes either `sparsity` (a share of weights, e.g. 0.5) or `m_by_n` (a pattern, "
            f"e.g. (2, 4)), exactly one of them. Received: sparsity={sparsity!r}, m_by_n={m_by_n!r}"
        )
    if sparsity is not None and not (is_number(sparsity) and 0 < sparsity < 1):
        raise ValueError(
            f"`sparsity` must be a float in (0, 1) such as 0.5. Received: sparsity={sparsity!r}"
        )
    if METHODS[method][1] and data is None:
        raise ValueError(
            f"`{_CALLER}` with method={method!r} needs calibration inputs: pass `data=` an array of inputs, "
            'a dict such as {"token_ids": ..., "padding_mask": ...} or batches. Received: data=None'
        )
    if isinstance(skip, str):
        raise TypeError(
            f"`skip` must be a list of layer names, not one string; write skip=({skip!r},)."
        )
    for name, value in (("block_columns", block_columns), ("batch_size", batch_size)):
        if not is_integer(value) or value < 1:
            raise ValueError(f"`{name}` must be an int >= 1. Received: {name}={value!r}")
    if not is_number(dampening) or dampening < 0:
        raise ValueError(
            f"`dampening` must be a number >= 0 such as 0.01. Received: dampening={dampening!r}"
        )
    return None if m_by_n is None else check_pattern((1, 1), "avg", m_by_n)[2]


def _copy(model):
    """A new model with the same layers and weights: a clone, or for a task model (keras-hub) its config."""
    if type(model) in (functional.Functional, keras.Sequential):
        return clone_graph(model, caller=_CALLER)
    try:
        copy = type(model).from_config(model.get_config())
    except Exception as error:  # noqa: BLE001 - any failure means the same thing to the user
        raise TypeError(
            f"`{_CALLER}` copies the model before pruning, but {type(model).__name__} '{model.name}' cannot be "
            f"re-created from its config ({first_line(error)}); give it a `get_config` that round-trips."
        ) from None
    copy.set_weights(model.get_weights())
    return copy


def _progress(verbose, count):
    if verbose == 1:
        return keras.utils.Progbar(count, unit_name="layer")
    return None


def _record(view, pruned_matrix, error, rows):
    zeros = int(np.sum(pruned_matrix == 0))
    return {
        "name": view.name,
        "class_name": type(view.layer).__name__,
        "parameters": int(pruned_matrix.size),
        "zeros": zeros,
        "sparsity": zeros / pruned_matrix.size,
        "error": error,
        "rows": rows,
    }


def _in_call_order(pruned_model, name, views, batches):
    """The views of the layers the model calls on `data`, first call first, and their calls per pass."""
    if batches is None:
        return views, {}
    layers = [view.layer for view in views]
    order, calls = _calibration.call_order(pruned_model, layers, batches[0])
    position = {id(layer): index for index, layer in enumerate(order)}
    unread = [view.name for view in views if id(view.layer) not in position]
    if unread:
        warnings.warn(
            f"`{_CALLER}`: model '{name}' does not call the layers {unread} on `data`, so they "
            "have no calibration inputs and are left dense.",
            stacklevel=3,
        )
    called = [view for view in views if id(view.layer) in position]
    return sorted(called, key=lambda view: position[id(view.layer)]), calls


def prune(model, method, sparsity=None, m_by_n=None, data=None, skip=(), block_columns=128, dampening=0.01,
          batch_size=32, verbose="auto"):  # fmt: skip
    """Prunes the Dense, EinsumDense and Conv1D/Conv2D kernels of a trained model once, to exact zeros.

    Post-training unstructured pruning from a few calibration inputs, as
    done for language models: `"magnitude"` (smallest |w| of each layer),
    `"wanda"` (Sun et al. 2023: `|w| * ||x||` per output) and `"sparsegpt"`
    (Frantar & Alistarh 2023: the inverse Hessian of the layer's inputs
    chooses the weights to prune and updates the others to keep the layer's
    outputs). See `tfprune.oneshot.methods` for each method's definition.

    Layers are pruned one at a time, in the order the model calls them
    (keras-hub decoder blocks included: their projections are found inside
    the blocks). For each layer the model, already pruned up to that layer,
    runs on `data` batch by batch until the layer has read its input; what
    the layer reads is folded into its Hessian `XᵀX` and dropped. This is
    SparseGPT's sequential mode, exact: every layer is fitted to the inputs
    the pruned layers before it give it. It costs one (partial) forward pass
    over `data` per layer; memory holds one batch's activations and one
    `(inputs, inputs)` matrix at a time, whatever the model's depth.

    Every other layer (embeddings, normalization, depthwise and grouped
    convolutions, subclasses of the Keras layers) is left as it is. A model
    of a class of its own (a keras-hub `CausalLM`) is copied through its
    config and keeps that class, so `generate` works on the result.

    Args:
        model: A built Sequential or functional Keras model (keras-hub task
            models included). Not modified.
        method: String. `"magnitude"`, `"wanda"` or `"sparsegpt"`.
        sparsity: Float in (0, 1). Share of each layer's kernel weights set to
            zero. Give this or `m_by_n`.
        m_by_n: Tuple `(m, n)` such as `(2, 4)`: in every run of `n`
            consecutive input channels each output keeps at most `m`
            non-zeros (the pattern `tfprune.check_m_by_n` checks).
        data: Calibration inputs, needed by `"wanda"` and `"sparsegpt"`
            (with `"magnitude"` only to report errors): an array of inputs, a
            dict of arrays (`{"token_ids": ..., "padding_mask": ...}` for a
            keras-hub causal LM; padded positions are left out), or batches
            (a `tf.data.Dataset`, `keras.utils.PyDataset` or generator).
        skip: Iterable of layer names left dense: a layer's name (every layer
            of that name), its qualified name (`"transformer_layer_0/
            self_attention/query"`, as the result prints them), or the name
            of a layer holding it. Defaults to `()`.
        block_columns: Int. SparseGPT's block of inputs (lazy updates and
            mask selection). Defaults to `128`.
        dampening: Float >= 0. SparseGPT adds `dampening * mean(diag(H))` to
            the Hessian's diagonal. Defaults to `0.01`.
        batch_size: Int. Batch size an array `data` is split into. Defaults
            to `32`.
        verbose: `"auto"`, 0, 1 (a progress bar) or 2 (one line per layer),
            as in `fit`. Defaults to `"auto"`.

    Returns:
        Tuple `(pruned_model, result)`: a new model of the same kind with
        exact zeros in the pruned kernels, and a `OneShotResult` (per-layer
        sparsity and reconstruction error).

    Raises:
        TypeError: If `model` is not a built Sequential/functional model, or
            `skip` is a string.
        ValueError: For an unknown method, both or neither of `sparsity` and
            `m_by_n`, missing `data` for a data-driven method, a name in `skip`
            the model does not have, or a layer that cannot be seen as a
            matrix (name it in `skip`).

    Example:

    >>> import keras, numpy as np, tfprune
    >>> inputs = keras.Input((16,))
    >>> model = keras.Model(inputs, keras.layers.Dense(8, name="dense")(inputs))
    >>> x = np.random.default_rng(0).normal(size=(64, 16)).astype("float32")
    >>> pruned, result = tfprune.oneshot.prune(model, "sparsegpt", sparsity=0.5, data=x, verbose=0)
    >>> float(np.mean(pruned.get_layer("dense").kernel.numpy() == 0))
    0.5
    """
    require_graph_model(model, _CALLER)
    m_by_n = _check_arguments(
        method, sparsity, m_by_n, data, skip, block_columns, dampening, batch_size
    )
    verbose = check_verbose(verbose, _CALLER)
    batches = (
        None if data is None else _features.input_batches(model, data, None, batch_size, _CALLER)
    )
    pruned_model = _copy(model)
    views = _kernels.kernel_views(pruned_model, set(skip), _CALLER)
    views, calls = _in_call_order(pruned_model, model.name, views, batches)
    if not views:
        raise ValueError(
            f"`{_CALLER}` found no Dense, EinsumDense, Conv1D or Conv2D layer to prune in model "
            f"'{model.name}' (skip={sorted(skip)})."
        )
    options = {
        "sparsity": sparsity,
        "m_by_n": m_by_n,
        "block_columns": block_columns,
        "dampening": dampening,
    }
    function = METHODS[method][0]
    progress, records = _progress(verbose, len(views)), []
    for index, view in enumerate(views):
        weights, hessian, rows = view.matrix(), None, 0
        if batches is not None:
            hessian, rows = _calibration.hessian(pruned_model, view, batches, calls[id(view.layer)])
        pruned = function(weights, hessian, view.channels, options)
        view.assign(pruned)
        error = None if hessian is None else methods.reconstruction_error(weights, pruned, hessian)
        records.append(_record(view, pruned, error, rows))
        if progress is not None:
            progress.update(index + 1)
        elif verbose == 2:
            shown = "-" if error is None else f"{error:.4f}"
            print(f"{view.name}: sparsity {records[-1]['sparsity']:.1%}, error {shown}")
    return pruned_model, OneShotResult(method, sparsity, m_by_n, records)
