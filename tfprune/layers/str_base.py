"""Soft Threshold Reparameterization (STR), written once for every layer type.

docs/METHODS.md §1 (Kusupati et al., 2020). A layer keeps its dense kernel `W` and a
trainable threshold parameter `s`; the forward pass uses

    unstructured: W_eff = sign(W) * relu(|W| - g(s))
    channel:      W_eff[..., n] = W[..., n] * relu(1 - g(s) / ||W[..., n]||)

so weights (or whole filters) whose magnitude is below the learned threshold
`g(s)` are exactly zero. With `compensate_shrinkage=True` (the default)
`W_eff` is then multiplied in the forward pass by one per-layer gain that
gives the surviving weights back the L2 norm they had before the soft
threshold shrank them; gradients stay the paper's (see `STRMixin`). `STRMixin` holds all of it; `STRConv2D`, `STRDense` and
the others are thin subclasses of the Keras layers, like Keras's own
`conv2d.py` over `base_conv.py`.
"""

import keras
import numpy as np
from keras import ops

from tfprune._keras import layers as keras_layers

__all__ = ["STRMixin", "SoftThresholdMixin"]

# g and its inverse (NumPy, used to rescale thresholds after training steps).
THRESHOLD_FUNCTIONS = {
    "sigmoid": (ops.sigmoid, lambda threshold: np.log(threshold) - np.log1p(-threshold)),
    "exp": (ops.exp, np.log),
}
GRANULARITIES = ("layer", "filter")
MODES = ("unstructured", "channel")
# The paper's L2 weight decay on s: SGD weight decay 1e-4 adds 1e-4 * s to the
# gradient, which is Keras's L2(5e-5) (penalty 5e-5 * s**2).
DEFAULT_THRESHOLD_L2 = 5e-5
# A filter norm below this is treated as zero (avoids 0/0 in channel mode).
_NORM_FLOOR = 1e-30
# Files saved before `compensate_shrinkage` existed hold layers that computed the
# paper's plain soft threshold; they load with this value so they compute the same.
_LEGACY_COMPENSATE_SHRINKAGE = False


def _forward_only(paper, compensated):
    """`compensated` in the forward pass, the gradients of `paper` in the backward pass.

    The gain would otherwise multiply every gradient of the layer: up to 5-8x
    at high sparsity, which made SGD diverge on a plain CNN (Adam, which
    normalises gradients, did not mind).
    """
    return paper + ops.stop_gradient(compensated - paper)


class SoftThresholdMixin:
    """The learned threshold `g(s)` shared by every STR layer (not used directly).

    A layer using it has `threshold_fn` and a variable `threshold_parameter` (`s`).

    Example:

    >>> import tfprune
    >>> issubclass(tfprune.layers.STRLowRankDense, tfprune.layers.SoftThresholdMixin)
    True
    """

    def _init_threshold(self, s_init, threshold_fn, threshold_regularizer):
        layer_type = type(self).__name__
        if isinstance(s_init, bool) or not isinstance(s_init, (int, float)) or not np.isfinite(s_init):
            raise ValueError(
                f"{layer_type} needs a finite float `s_init`, e.g. -20.0. Received: s_init={s_init!r}"
            )
        if threshold_fn not in THRESHOLD_FUNCTIONS:
            raise ValueError(
                f"{layer_type} supports threshold_fn in {sorted(THRESHOLD_FUNCTIONS)}. "
                f"Received: threshold_fn={threshold_fn!r}"
            )
        self.s_init = float(s_init)
        self.threshold_fn = threshold_fn
        if isinstance(threshold_regularizer, str) and threshold_regularizer == "default":
            threshold_regularizer = keras.regularizers.L2(DEFAULT_THRESHOLD_L2)
        self.threshold_regularizer = keras.regularizers.get(threshold_regularizer)

    def _add_threshold_parameter(self, shape):
        self.threshold_parameter = self.add_weight(
            name="threshold_parameter",
            shape=shape,
            initializer=keras.initializers.Constant(self.s_init),
            regularizer=self.threshold_regularizer,
            trainable=True,
            dtype=self.dtype,
        )

    def _threshold_config(self):
        return {
            "s_init": self.s_init,
            "threshold_fn": self.threshold_fn,
            "threshold_regularizer": keras.regularizers.serialize(self.threshold_regularizer),
        }

    # Keras's Dense/Conv serialise only (kernel, bias); STR adds `s`, so save all variables.
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)

    @property
    def threshold(self):
        """The threshold `g(s)`: a scalar, or one value per output channel (`"filter"`)."""
        return THRESHOLD_FUNCTIONS[self.threshold_fn][0](self.threshold_parameter)

    def scale_thresholds(self, factor):
        """Multiplies the threshold `g(s)` by `factor` (by changing `s`).

        With `threshold_fn="sigmoid"` a threshold cannot reach 1, so a product
        above 1 is clipped to `1 - 1e-7`.

        Args:
            factor: Positive float.

        Raises:
            ValueError: If `factor` is not positive.

        Example:

        >>> import tfprune
        >>> layer = tfprune.layers.STRDense(2, threshold_fn="exp", s_init=-2.0)
        >>> layer.build((None, 3))
        >>> layer.scale_thresholds(2.0)
        >>> round(float(layer.threshold), 4)
        0.2707
        """
        if not factor > 0:
            raise ValueError(
                f"Layer '{self.name}' can only scale its threshold by a positive factor. "
                f"Received: factor={factor!r}"
            )
        inverse = THRESHOLD_FUNCTIONS[self.threshold_fn][1]
        threshold = ops.convert_to_numpy(self.threshold).astype("float64") * factor
        if self.threshold_fn == "sigmoid":
            threshold = np.minimum(threshold, 1.0 - 1e-7)  # sigmoid never reaches 1
        self.threshold_parameter.assign(inverse(threshold).astype(self.threshold_parameter.dtype))


class STRMixin(SoftThresholdMixin):
    """The STR logic shared by `STRConv1D`, `STRConv2D`, `STRDepthwiseConv2D`, `STRDense`.

    A subclass lists this mixin before the Keras layer it extends
    (`class STRConv2D(STRMixin, keras.layers.Conv2D)`) and sets `_filter_axes`
    (how many trailing kernel axes index output channels: 1, or 2 for
    depthwise kernels); it needs no other code. The STR arguments are
    keyword-only; every other argument goes to the Keras layer.

    Args:
        s_init: Float. Initial value of the threshold parameter `s`. The
            default `-20.0` makes `g(s_init)` ~ 0 (sigmoid: 2e-9), so a freshly
            converted layer computes what the dense layer computed. Defaults
            to `-20.0`.
        threshold_fn: String. `g`: `"sigmoid"` (the paper's choice, thresholds
            below 1) or `"exp"`. Defaults to `"sigmoid"`.
        granularity: String. `"layer"`: one trainable scalar `s` (the paper);
            `"filter"`: one `s` per output channel. Defaults to `"layer"`.
        mode: String. `"unstructured"`: soft-threshold each weight;
            `"channel"`: soft-threshold each filter's L2 norm, so whole output
            channels reach exact zero (see `zero_filters()`). Defaults to
            `"unstructured"`.
        threshold_regularizer: Regularizer on `s`, a Keras regularizer or its
            name/config, or None. `"default"` is `keras.regularizers.L2(5e-5)`,
            the paper's SGD weight decay 1e-4 applied to `s`: decay pulls `s`
            towards 0 and so raises the threshold. Defaults to `"default"`.
        compensate_shrinkage: Bool. The soft threshold shrinks every surviving
            weight by `g(s)` (at 90% sparsity a typical survivor keeps about a
            fifth of its magnitude). A normalization layer after the STR layer
            undoes that, as in the paper's ResNets; without one the shrinkage
            compounds through depth and a network trained to high sparsity
            stops passing signal (a plain CNN at 98% sat at chance). With
            `True` the forward pass multiplies the sparse kernel by
            `||W * 1[|W| > g(s)]|| / ||W_eff||` (filter norms in `"channel"`
            mode), the L2 norm of the surviving weights before over after the
            threshold, so the layer keeps its output scale while the zeros
            stay exactly where the paper puts them; the backward pass keeps
            the paper's gradients (the gain, 5-8x at high sparsity, would
            multiply them, and SGD diverged on a plain CNN when it did).
            `False` is the paper's layer. Defaults to `True`; layers in
            `.keras` files saved before this argument existed load with
            `False`.
        *args, **kwargs: The arguments of the Keras layer.

    Raises:
        ValueError: If an STR argument is invalid, or `lora_rank` is given.

    The mixin replaces the `kernel` property with the effective sparse kernel,
    so the Keras layer's own `call` runs unchanged on `W_eff`, while the dense
    `W` stays in the variable `_kernel` (saved and trained).

    Example:

    >>> import keras, tfprune
    >>> layer = tfprune.layers.STRDense(4, s_init=-1.0)
    >>> _ = layer(keras.ops.ones((1, 3)))
    >>> isinstance(layer, tfprune.layers.STRMixin)
    True
    """

    _filter_axes = 1

    def __init__(
        self,
        *args,
        s_init=-20.0,
        threshold_fn="sigmoid",
        granularity="layer",
        mode="unstructured",
        threshold_regularizer="default",
        compensate_shrinkage=True,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self._init_threshold(s_init, threshold_fn, threshold_regularizer)
        layer_type = type(self).__name__
        if not isinstance(compensate_shrinkage, (bool, np.bool_)):
            raise ValueError(
                f"{layer_type} needs `compensate_shrinkage` to be True or False. "
                f"Received: compensate_shrinkage={compensate_shrinkage!r}"
            )
        self.compensate_shrinkage = bool(compensate_shrinkage)
        if granularity not in GRANULARITIES:
            raise ValueError(
                f"{layer_type} supports granularity in {GRANULARITIES}. "
                f"Received: granularity={granularity!r}"
            )
        if mode not in MODES:
            raise ValueError(f"{layer_type} supports mode in {MODES}. Received: mode={mode!r}")
        if getattr(self, "lora_rank", None):
            raise ValueError(
                f"{layer_type} cannot be combined with LoRA; drop `lora_rank`. "
                f"Received: lora_rank={self.lora_rank}"
            )
        self.granularity = granularity
        self.mode = mode

    # `keras.layers.DepthwiseConv2D.build` assigns `self.kernel`; keep it in `_kernel`
    # like the other layers so that `kernel` can return the sparse kernel.
    @property
    def kernel(self):
        return self.sparse_kernel

    @kernel.setter
    def kernel(self, value):
        keras_layers.set_kernel_variable(self, value)

    def build(self, input_shape):
        super().build(input_shape)
        shape = ()
        if self.granularity == "filter":
            shape = tuple(keras_layers.stored_kernel(self).shape[-self._filter_axes :])
        self._add_threshold_parameter(shape)

    @property
    def sparse_kernel(self):
        """The effective kernel `W_eff` used by the forward pass (same shape as the kernel)."""
        kernel = keras_layers.stored_kernel(self)
        # Norms and the gain in at least float32 under mixed precision: float16
        # squares of small weights underflow, and _NORM_FLOOR is not a float16 number.
        dtype = keras.backend.standardize_dtype(kernel.dtype)
        norm_dtype = "float32" if dtype in ("float16", "bfloat16") else dtype
        if self.mode == "unstructured":
            threshold = ops.cast(self.threshold, kernel.dtype)
            sparse = ops.sign(kernel) * ops.relu(ops.abs(kernel) - threshold)
            if not self.compensate_shrinkage:
                return sparse
            wide_kernel = ops.cast(kernel, norm_dtype)
            kept = ops.where(ops.abs(wide_kernel) > ops.cast(self.threshold, norm_dtype), wide_kernel, 0.0)
            gain = self._gain(ops.sum(ops.square(kept)), ops.sum(ops.square(ops.cast(sparse, norm_dtype))))
            return _forward_only(sparse, sparse * ops.cast(gain, dtype))
        squared_norm = ops.sum(ops.square(ops.cast(kernel, norm_dtype)), axis=self._reduced_axes())
        norm = ops.sqrt(ops.maximum(squared_norm, _NORM_FLOOR))
        threshold = ops.cast(self.threshold, norm_dtype)
        scale = ops.relu(norm - threshold) / norm
        sparse = kernel * ops.cast(scale, dtype)
        if not self.compensate_shrinkage:
            return sparse
        kept = ops.where(norm > threshold, squared_norm, 0.0)
        gain = self._gain(ops.sum(kept), ops.sum(ops.square(scale) * squared_norm))
        return _forward_only(sparse, sparse * ops.cast(gain, dtype))

    @staticmethod
    def _gain(kept_squared_norm, sparse_squared_norm):
        # sqrt(kept / sparse); 0 when nothing survives.
        return ops.sqrt(kept_squared_norm / ops.maximum(sparse_squared_norm, _NORM_FLOOR))

    def _reduced_axes(self):
        return tuple(range(len(keras_layers.stored_kernel(self).shape) - self._filter_axes))

    def pruning_scores(self):
        """Returns the magnitudes STR compares to the threshold, as NumPy arrays.

        A weight (or, in `"channel"` mode, a filter) is zero exactly when its
        score is at most its threshold. `tfprune.callbacks.SparsityBudget` uses
        this to count and rescale thresholds without running the model.

        Returns:
            Tuple `(scores, thresholds, weights_per_score)`: `scores` is `|W|`
            (unstructured) or the filter L2 norms (channel), `thresholds`
            broadcasts against `scores`, and `weights_per_score` is how many
            kernel weights one score stands for (1, or the filter size).

        Example:

        >>> import keras, tfprune
        >>> layer = tfprune.layers.STRDense(2, mode="channel")
        >>> layer.build((None, 3))
        >>> scores, thresholds, weights_per_score = layer.pruning_scores()
        >>> scores.shape, weights_per_score
        ((2,), 3)
        """
        # float32 like the variables: |W| <= g compares exactly what the layer compares.
        kernel = np.abs(ops.convert_to_numpy(ops.cast(keras_layers.stored_kernel(self), "float32")))
        thresholds = ops.convert_to_numpy(ops.cast(self.threshold, "float32"))
        if self.mode == "unstructured":
            return kernel, thresholds, 1
        scores = np.sqrt(np.sum(np.square(kernel, dtype="float64"), axis=self._reduced_axes()))
        return scores, thresholds, kernel.size // scores.size

    def zero_filters(self):
        """Returns which output channels have an all-zero effective kernel.

        For depthwise layers the channels are ordered as the layer's outputs
        (`input_channel * depth_multiplier + multiplier_index`).

        Returns:
            NumPy bool array of shape `(output_channels,)`.

        Example:

        >>> import keras, tfprune
        >>> layer = tfprune.layers.STRDense(
        ...     3, mode="channel", granularity="filter",
        ...     kernel_initializer=keras.initializers.Constant(0.5))
        >>> layer.build((None, 2))  # every filter norm is 0.5 * sqrt(2) = 0.707
        >>> _ = layer.threshold_parameter.assign([-5.0, 5.0, -5.0])  # g = 0.007, 0.993, 0.007
        >>> layer.zero_filters().tolist()
        [False, True, False]
        """
        sparse = ops.convert_to_numpy(self.sparse_kernel)
        return np.all(sparse == 0, axis=self._reduced_axes()).reshape(-1)

    def stripped_layer(self):
        """Returns the plain Keras layer with the effective sparse kernel (strip protocol).

        Returns:
            A new, built layer of the Keras class this layer extends, with the
            same name and config, whose kernel is `sparse_kernel`.

        Example:

        >>> import tfprune
        >>> layer = tfprune.layers.STRDense(2)
        >>> layer.build((None, 3))
        >>> type(layer.stripped_layer()).__name__
        'Dense'
        """
        plain_class = self._plain_class()
        config = {key: value for key, value in self.get_config().items() if key not in _STR_CONFIG_KEYS}
        plain = plain_class.from_config(config)
        plain.build_from_config(self.get_build_config())
        # Dense/Conv keep the kernel variable in `_kernel`, DepthwiseConv2D in `kernel`.
        kernel_variable = keras_layers.kernel_variable(plain)
        kernel_variable.assign(self.sparse_kernel)
        if self.use_bias:
            plain.bias.assign(np.array(self.bias.numpy()))  # a copy: on JAX, variables share buffers
        return plain

    def _plain_class(self):
        for base in type(self).__mro__:
            if base.__module__.startswith("keras."):
                return base
        raise TypeError(f"{type(self).__name__} does not extend a Keras layer.")

    def get_config(self):
        config = super().get_config()
        config.update(self._threshold_config())
        config.update(
            {
                "granularity": self.granularity,
                "mode": self.mode,
                "compensate_shrinkage": self.compensate_shrinkage,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.setdefault("compensate_shrinkage", _LEGACY_COMPENSATE_SHRINKAGE)
        return super().from_config(config)


_STR_CONFIG_KEYS = (
    "s_init",
    "threshold_fn",
    "granularity",
    "mode",
    "threshold_regularizer",
    "compensate_shrinkage",
)
