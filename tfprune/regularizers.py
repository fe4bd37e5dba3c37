"""Sparsity-inducing regularizers for structured pruning.

`BNGammaL1` is the Network Slimming penalty on BatchNormalization scales
(docs/METHODS.md §4); `GroupLasso` is the SSL group-lasso penalty on conv/dense
kernels (docs/METHODS.md §3). `attach` returns a copy of a model with either one
set on every matching layer, so that `model.fit` trains with the penalty.
"""

import keras
from keras import ops

from tfprune._utils import clone_graph, require_graph_model

__all__ = ["BNGammaL1", "GroupLasso", "attach"]


def _check_strength(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(
            f"`{name}` must be a non-negative number such as 1e-5. Received: {name}={value!r}"
        )
    return float(value)


@keras.saving.register_keras_serializable(package="tfprune")
class BNGammaL1(keras.regularizers.Regularizer):
    """L1 penalty `l1 * Σ|γ|` for BatchNormalization scales (Network Slimming).

    Its gradient is `l1 * sign(γ)`, the subgradient the Network Slimming
    reference adds to γ's gradient each step; passed as a BN layer's
    `gamma_regularizer` it drives unimportant channels' scales towards zero.

    Under SGD with the long schedules of the papers that works. Under Adam
    the subgradient is normalised with the loss gradient, so every γ moves by
    at most the learning rate per step whatever `l1` is: after a few hundred
    steps at 1e-3 no γ is near zero (issue 15). For adaptive optimizers and
    short trainings use `tfprune.callbacks.BNSparsity()` instead, whose
    proximal step in the optimizer's metric gives exact zeros.

    Args:
        l1: Float. Strength λ (1e-4 for VGG, 1e-5 for ResNet/MobileNet in the
            papers). Defaults to `1e-5`.

    Raises:
        ValueError: If `l1` is negative or not a number.

    Example:

    >>> import keras, tfprune
    >>> layer = keras.layers.BatchNormalization(
    ...     gamma_regularizer=tfprune.regularizers.BNGammaL1(1e-4))
    """

    def __init__(self, l1=1e-5):
        self.l1 = _check_strength(l1, "l1")

    def __call__(self, x):
        # sign(x) * x is |x| with the subgradient sign(x), 0 at 0, on every backend
        # (JAX differentiates abs as 1 at 0).
        return self.l1 * ops.sum(ops.sign(x) * x)

    def get_config(self):
        return {"l1": self.l1}


def _group_axes(rank, group):
    """Axes reduced inside one group, for a kernel of `rank` with outputs last."""
    all_axes = tuple(range(rank))
    return {
        # one group per output filter W[..., n]
        "filter": all_axes[:-1],
        # one group per input channel W[..., c, :]
        "channel": all_axes[:-2] + all_axes[-1:],
        # one group per kernel position (h, w, c) across all filters
        "shape": all_axes[-1:],
        # the whole kernel is one group
        "depth": all_axes,
    }[group]


def _safe_norm(squared_sum):
    # sqrt has an infinite derivative at 0; an all-zero group gets the
    # subgradient 0 instead of NaN (the double `where` keeps NaN out of autodiff).
    positive = squared_sum > 0
    safe = ops.where(positive, squared_sum, ops.ones_like(squared_sum))
    return ops.where(positive, ops.sqrt(safe), ops.zeros_like(squared_sum))


@keras.saving.register_keras_serializable(package="tfprune")
class GroupLasso(keras.regularizers.Regularizer):
    """Group-lasso penalty `l2 * Σ_g ||W_g||_2` (SSL, Wen et al. 2016).

    The kernel is split into groups and the L2 norms of the groups are summed,
    which pushes whole groups to exactly zero. With Keras's kernel layout
    (outputs last, e.g. `(h, w, in, out)` for Conv2D, `(in, out)` for Dense):

    - `"filter"`: one group per output filter `W[..., n]` (removable filters).
    - `"channel"`: one group per input channel `W[..., c, :]`.
    - `"shape"`: one group per kernel position `W[h, w, c, :]` across filters.
    - `"depth"`: the whole kernel is one group (removable layer).

    Args:
        l2: Float. Strength λ. Defaults to `1e-4`.
        group: String. One of `"filter"`, `"channel"`, `"shape"`, `"depth"`.
            Defaults to `"filter"`.

    Raises:
        ValueError: If `l2` is negative or `group` is not one of the four.

    Example:

    >>> import keras, tfprune
    >>> conv = keras.layers.Conv2D(
    ...     16, 3, kernel_regularizer=tfprune.regularizers.GroupLasso(1e-4, "filter"))
    """

    GROUPS = ("filter", "channel", "shape", "depth")

    def __init__(self, l2=1e-4, group="filter"):
        self.l2 = _check_strength(l2, "l2")
        if group not in self.GROUPS:
            raise ValueError(
                f"`group` must be one of {self.GROUPS}. Received: group={group!r}"
            )
        self.group = group

    def __call__(self, x):
        if len(x.shape) < 2:
            raise ValueError(
                "GroupLasso applies to kernels with at least 2 dimensions (outputs last). "
                f"Received a weight of shape {tuple(x.shape)}; use it as a kernel_regularizer."
            )
        axes = _group_axes(len(x.shape), self.group)
        norms = _safe_norm(ops.sum(ops.square(x), axis=axes))
        return self.l2 * ops.sum(norms)

    def get_config(self):
        return {"l2": self.l2, "group": self.group}


# Which constructor argument of a layer holds the regularizer of its kernel.
_KERNEL_REGULARIZER_ARGUMENT = ("kernel_regularizer", "depthwise_regularizer")


def _with_config_changes(layer, changes):
    config = layer.get_config()
    config.update(changes)
    new_layer = layer.__class__.from_config(config)
    new_layer.build(layer.input.shape)
    new_layer.set_weights(layer.get_weights())
    return new_layer


def attach(model, bn_gamma=None, kernel=None, kernel_layers=None):
    """Returns a copy of `model` with sparsity regularizers attached.

    Every `BatchNormalization` layer gets `bn_gamma` as its
    `gamma_regularizer`; every layer with a `kernel_regularizer` (Conv, Dense)
    or `depthwise_regularizer` (DepthwiseConv2D) argument gets `kernel`. The
    penalties then appear in `model.losses` and are minimised by `fit`.
    Weights are copied; the input model is not modified.

    Args:
        model: A built Sequential or functional Keras model.
        bn_gamma: Optional float or regularizer. A float `l1` means
            `BNGammaL1(l1)`. `None` leaves BN layers as they are.
        kernel: Optional regularizer (e.g. `GroupLasso(1e-4, "filter")`) for
            kernels. `None` leaves kernels as they are.
        kernel_layers: Optional callable `layer -> bool` choosing which layers
            get `kernel`. Defaults to every layer with a kernel.

    Returns:
        A new `keras.Model` with the same weights and names.

    Raises:
        TypeError: If `model` is not a graph model or a regularizer is not callable.
        ValueError: If `bn_gamma` is a negative number.

    Example:

    >>> import keras, tfprune
    >>> inputs = keras.Input((8, 8, 3))
    >>> x = keras.layers.Conv2D(4, 3)(inputs)
    >>> model = keras.Model(inputs, keras.layers.BatchNormalization()(x))
    >>> sparse = tfprune.regularizers.attach(model, bn_gamma=1e-4)
    >>> len(sparse.losses)
    1
    """
    require_graph_model(model, "tfprune.regularizers.attach")
    if isinstance(bn_gamma, (int, float)) and not isinstance(bn_gamma, bool):
        bn_gamma = BNGammaL1(bn_gamma)
    for name, value in (("bn_gamma", bn_gamma), ("kernel", kernel)):
        if value is not None and not callable(value):
            raise TypeError(
                f"`{name}` must be a regularizer (a callable such as GroupLasso(1e-4)) or None. "
                f"Received: {name}={value!r}"
            )
    kernel_layers = kernel_layers or (lambda layer: True)

    def replace(layer):
        if bn_gamma is not None and isinstance(layer, keras.layers.BatchNormalization):
            return _with_config_changes(layer, {"gamma_regularizer": bn_gamma})
        if kernel is None or not kernel_layers(layer):
            return None
        config = layer.get_config()
        for argument in _KERNEL_REGULARIZER_ARGUMENT:
            if argument in config:
                return _with_config_changes(layer, {argument: kernel})
        return None

    return clone_graph(model, replace)
