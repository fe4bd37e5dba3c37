"""First-order Taylor criterion: the loss change a channel's removal would cause, estimated on data.

Removing channel `c` of a group is the same as multiplying it by a gate
`m_c = 0` where every consumer reads it. To first order the loss changes by
`-dL/dm_c` (at `m_c = 1`), and for a consumer that is linear in its input
(a convolution, a dense or attention projection) that derivative is the sum
of `w * dL/dw` over the consumer weights that read channel `c`. Summed over
the group's consumers and taken in absolute value, it is the importance of
Molchanov et al. (CVPR 2019, "Importance estimation for neural network
pruning") and, for the heads of an attention layer (the consumer is the
output projection's rows of the head), the head importance of Michel et al.
(NeurIPS 2019, "Are sixteen heads really better than one?"); see
docs/METHODS.md §13 for where tfprune departs from them.
"""

import keras
import numpy as np

from tfprune import _features, _gradients
from tfprune._utils import check_verbose
from tfprune.criteria.base import register

__all__ = ["taylor"]

_CALLER = "Criterion 'taylor'"


def _loss_function(model, loss):
    """The per-element loss `(y, y_pred) -> losses`, from `loss` or the model's compiled loss.

    A `keras.losses.Loss` gives its unreduced values (`Loss.call`), so that
    sample weights (padding) weight each element.
    """
    loss = getattr(model, "loss", None) if loss is None else loss
    if loss is None and _is_causal_lm(model):  # keras-hub's CausalLM.compile default
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if loss is None:
        raise ValueError(
            f"{_CALLER} needs a loss: compile model '{model.name}' with one "
            "(`model.compile(loss=...)`) or pass it, e.g. "
            "`criterion=functools.partial(tfprune.criteria.taylor, loss='sparse_categorical_crossentropy')`."
        )
    if isinstance(loss, dict):
        loss = list(loss.values())
    if isinstance(loss, (list, tuple)):
        if len(loss) != 1:
            raise ValueError(
                f"{_CALLER} supports models with one loss; model '{model.name}' has {len(loss)}. "
                "Pass `loss=` a callable `(y_true, y_pred) -> loss` for its output."
            )
        loss = loss[0]
    try:
        function = keras.losses.get(loss)
    except ValueError:
        raise ValueError(
            f"{_CALLER}: unknown loss {loss!r}; pass `loss=` a Keras loss name, a keras.losses.Loss "
            "or a callable `(y_true, y_pred) -> loss`."
        ) from None
    if not callable(function):
        raise ValueError(f"{_CALLER}: `loss` must be a loss name or a callable. Received: loss={loss!r}")
    return function


def _is_causal_lm(model):
    """Whether the model reads keras-hub's `token_ids`/`padding_mask` and gives one logit per vocabulary token.

    The output's width must be the vocabulary of a token embedding of the
    model, so a token tagger or classifier on the same inputs is not taken
    for a language model.
    """
    names = {tensor.name for tensor in model.inputs}
    output = model.outputs[0]
    if not ({"token_ids", "padding_mask"} <= names and len(output.shape) == 3):
        return False
    return output.shape[-1] in _vocabularies(model)


def _vocabularies(model):
    """The `input_dim` of every Embedding of a model, nested models included."""
    found = set()
    for layer in model.layers:
        if isinstance(layer, keras.layers.Embedding):
            found.add(layer.input_dim)
        elif isinstance(layer, keras.Model):
            found |= _vocabularies(layer)
    return found


def next_token_labels(inputs):
    """A causal LM's labels for a batch of token inputs: the next token, padding masked out.

    Position `t` is labelled with token `t + 1` and weighted 1 when both are
    real tokens (`padding_mask` 1), 0 otherwise (the last position, and any
    padding on either side) — what keras-hub's CausalLM preprocessors give
    `fit`, without dropping the last position.

    Args:
        inputs: Dict with `token_ids` and `padding_mask`, each `(batch, sequence)`.

    Returns:
        Tuple `(labels, sample_weight)`: int32 and float32 arrays `(batch, sequence)`.

    Example:

    >>> import numpy as np
    >>> labels, weight = next_token_labels(
    ...     {"token_ids": np.array([[5, 6, 7, 0]]), "padding_mask": np.array([[1, 1, 1, 0]])})
    >>> labels.tolist(), weight.tolist()
    ([[6, 7, 0, 0]], [[1.0, 1.0, 0.0, 0.0]])
    """
    tokens = np.asarray(inputs["token_ids"])
    mask = np.asarray(inputs["padding_mask"]).astype(bool)
    labels = np.zeros_like(tokens, dtype="int32")
    labels[:, :-1] = tokens[:, 1:]
    weight = np.zeros(tokens.shape, "float32")
    weight[:, :-1] = mask[:, 1:] & mask[:, :-1]
    return labels, weight


def _weighted_mean(function, y, prediction, weight):
    """The batch's loss: per-element values in float32, weighted by `weight`, then reduced.

    A `keras.losses.Loss` gives its per-element values through `call`; they
    are summed for `reduction="sum"` and otherwise averaged over the
    weights (a mean over real tokens for padding weights). A weight with
    fewer axes than the values (one per example) applies to every element
    of its example.
    """
    values = function.call(y, prediction) if isinstance(function, keras.losses.Loss) else function(y, prediction)
    values = keras.ops.cast(values, "float32")
    if weight is None:
        weight = keras.ops.ones_like(values)
    else:
        weight = np.asarray(weight, "float32")
        weight = weight.reshape(weight.shape + (1,) * max(0, len(values.shape) - weight.ndim))
        if weight.ndim != len(values.shape):
            raise ValueError(
                f"{_CALLER}: sample weights of shape {weight.shape} do not match the loss's values of shape "
                f"{tuple(values.shape)}; give one weight per example or per loss value."
            )
        weight = keras.ops.broadcast_to(keras.ops.convert_to_tensor(weight), keras.ops.shape(values))
    total = keras.ops.sum(values * weight)
    if getattr(function, "reduction", None) == "sum":
        return total
    return total / keras.ops.maximum(keras.ops.sum(weight), 1e-12)


def _consumer_members(group):
    """The members that read the group's channels as inputs (gates there remove the channel)."""
    return [member for member in group.members if member.role == "input"]


def _channel_sums(product, axis, positions, channels, size):
    """Sums `product` over every axis but `axis`, then adds its `positions` into group `channels`."""
    moved = np.moveaxis(product, axis, 0).reshape(product.shape[axis], -1).sum(axis=1)
    sums = np.zeros(size)
    np.add.at(sums, list(channels), moved[list(positions)])
    return sums


def taylor(model, graph, data=None, seed=None, loss=None, num_batches=None, batch_size=32, verbose="auto"):
    """Scores each channel by the first-order estimate of the loss change its removal causes.

    For each batch, the gradient of the loss is taken with respect to the
    kernels of the group's consumers (the layers whose inputs are the
    group's channels); channel `c`'s estimate is the sum of `w * dL/dw` over
    the weights that read it, and its score is the mean over the batches of
    the estimate's absolute value (Molchanov et al. 2019; for the heads of a
    `MultiHeadAttention` layer, whose consumer is the output projection,
    Michel et al. 2019). A channel that no consumer reads scores 0. For a
    transformer's hidden width (`targets="hidden"`) the estimate leaves out
    that LayerNormalization's statistics change too.

    A keras-hub causal LM (inputs `token_ids` and `padding_mask`, logits per
    token) needs no labels: given only calibration sequences
    `{"token_ids": ..., "padding_mask": ...}`, the loss is the next-token
    cross-entropy (`next_token_labels`: token `t + 1` is the label of
    position `t`, padding weighted 0), with the model's compiled loss or,
    uncompiled, `SparseCategoricalCrossentropy(from_logits=True)` as
    keras-hub compiles it. Sample weights given as `(x, y, sample_weight)`
    weight the loss the same way (docs/METHODS.md §14).

    The model runs in inference mode (`training=False`: dropout off,
    BatchNormalization on its moving statistics); gradients are computed by
    the current backend (TensorFlow, JAX or PyTorch). The scores are not
    comparable across groups by default (`tfprune.prune` removes the same
    share of every group); `scope="global"` ranks them together, as the
    papers do.

    Args:
        model: A built single-output `keras.Model`. Not modified.
        graph: `tfprune.graph.build(model)`.
        data: Inputs with labels: an `(x, y)` tuple of arrays, or batches of
            `(x, y)` or `(x, y, sample_weight)` from a `tf.data.Dataset`,
            `keras.utils.PyDataset` or generator; `x` is a dict
            `{input_name: array}` for a model with several inputs. A causal
            LM takes its inputs alone (the dict, or batches of it).
        seed: Unused (the criterion is deterministic).
        loss: A loss name, `keras.losses.Loss` or callable
            `(y_true, y_pred) -> loss`; None (default) uses the model's
            compiled loss (`tfprune.prune` passes the compiled loss of the
            model it was given), or for an uncompiled causal LM the
            next-token cross-entropy on its logits.
        num_batches: Int or None. Batches used; None (default) uses all the data.
        batch_size: Int. Batch size when `data` is an array. Defaults to `32`.
        verbose: `"auto"` (1), 0, 1 or 2, as in Keras: 1 shows a progress bar
            over the batches. Defaults to `"auto"`.

    Returns:
        Dict `{group_name: scores}` for every prunable group that has a
        consumer (higher is more important).

    Raises:
        ValueError: If `data` is missing, empty, without labels (for a model
            other than a causal LM) or of the wrong shape or input names,
            there is no loss (uncompiled model and no `loss=`)
            or it is unknown, the model has several losses, inputs or
            outputs, the loss is not finite, or `verbose` is out of range.
        TypeError: If `data` is not a dataset or an array.

    Example:

    >>> # model.compile(loss="sparse_categorical_crossentropy")
    >>> # small, result = tfprune.prune(model, "taylor", rate=0.3, data=(x_train, y_train))
    >>> # A keras-hub causal LM, on a few calibration sequences (next-token loss):
    >>> # calibration = {"token_ids": token_ids, "padding_mask": padding_mask}
    >>> # small, result = tfprune.prune(lm, "taylor", rate=0.3, data=calibration)
    """
    if len(model.outputs) != 1:
        raise ValueError(
            f"{_CALLER} supports single-output models; model '{model.name}' has {len(model.outputs)} "
            "outputs: score a single-output model built on the same layers."
        )
    function = _loss_function(model, loss)
    unlabelled = next_token_labels if _is_causal_lm(model) else None
    batches = _features.labelled_batches(model, data, num_batches, batch_size, _CALLER, unlabelled)
    progress = keras.utils.Progbar(len(batches), verbose=check_verbose(verbose, _CALLER), unit_name="batch")
    groups = [group for group in graph.groups if group.prunable and _consumer_members(group)]
    by_path = {variable.path: variable for variable in model.weights}
    paths = sorted({path for group in groups for member in _consumer_members(group) for path, _ in member.weights})
    variables = [by_path[path] for path in paths]
    weights = {path: np.asarray(keras.ops.convert_to_numpy(variable), "float64") for path, variable in zip(paths, variables)}
    totals = {group.name: np.zeros(group.size) for group in groups}
    for x, y, weight in batches:

        def batch_loss(x=x, y=y, weight=weight):
            return _weighted_mean(function, y, model(x, training=False), weight)

        value, gradients = _gradients.loss_gradients(batch_loss, variables)
        if not np.isfinite(value):
            raise ValueError(
                f"{_CALLER}: the loss of model '{model.name}' is {value} on a batch of `data`; "
                "check the labels and the loss (e.g. from_logits)."
            )
        products = {  # a consumer the loss does not read (TF/PyTorch: None) changes nothing
            path: np.zeros_like(weights[path]) if gradient is None else weights[path] * gradient
            for path, gradient in zip(paths, gradients)
        }
        for group in groups:
            estimate = np.zeros(group.size)
            for member in _consumer_members(group):
                for path, axis in member.weights:
                    estimate += _channel_sums(products[path], axis, member.positions, member.channels, group.size)
            totals[group.name] += np.abs(estimate)
        progress.add(1)
    return {name: total / len(batches) for name, total in totals.items()}


register("taylor", taylor)
